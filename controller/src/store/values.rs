//! The plain values the store's queries take and give, on either database: parameters, row
//! values and rows. Their own module so that both the seam (`db`) and the PostgreSQL side
//! (`pg`) use them without depending on each other.

/// A query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param<'a> {
    /// NULL.
    Null,
    /// An integer (a boolean is 0 or 1, as SQLite keeps it).
    Int(i64),
    /// Text.
    Text(&'a str),
}

/// What can be a query parameter.
pub trait ToParam {
    /// As a parameter.
    fn param(&self) -> Param<'_>;
}

impl ToParam for i64 {
    fn param(&self) -> Param<'_> {
        Param::Int(*self)
    }
}

impl ToParam for bool {
    fn param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}

impl ToParam for str {
    fn param(&self) -> Param<'_> {
        Param::Text(self)
    }
}

impl ToParam for String {
    fn param(&self) -> Param<'_> {
        Param::Text(self)
    }
}

impl<T: ToParam + ?Sized> ToParam for &T {
    fn param(&self) -> Param<'_> {
        (**self).param()
    }
}

impl<T: ToParam> ToParam for Option<T> {
    fn param(&self) -> Param<'_> {
        match self {
            None => Param::Null,
            Some(v) => v.param(),
        }
    }
}

/// The parameters of a query: `p![a, b]` is `[a.param(), b.param()]`.
macro_rules! p {
    ($($x:expr),* $(,)?) => {
        [$($crate::store::db::ToParam::param(&$x)),*]
    };
}
pub(crate) use p;

/// A value read from a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// NULL.
    Null,
    /// An integer (PostgreSQL's booleans read as 0 or 1).
    Int(i64),
    /// Text.
    Text(String),
}

/// One row of a query's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub(crate) Vec<Value>);

/// What a column can be read as.
pub trait FromValue: Sized {
    /// What it expects, for the error.
    const WHAT: &'static str;
    /// `v` as this type, if it is one.
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    const WHAT: &'static str = "an integer";
    fn from_value(v: &Value) -> Option<i64> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl FromValue for bool {
    const WHAT: &'static str = "a boolean";
    fn from_value(v: &Value) -> Option<bool> {
        i64::from_value(v).map(|i| i != 0)
    }
}

impl FromValue for String {
    const WHAT: &'static str = "text";
    fn from_value(v: &Value) -> Option<String> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    const WHAT: &'static str = T::WHAT;
    fn from_value(v: &Value) -> Option<Option<T>> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl Row {
    /// Column `i` as a `T`.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, String> {
        let v = self
            .0
            .get(i)
            .ok_or_else(|| format!("database: no column {i}"))?;
        T::from_value(v).ok_or_else(|| format!("database: column {i} is {v:?}, not {}", T::WHAT))
    }
}

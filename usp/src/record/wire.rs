//! A schema-less pass over protobuf wire bytes, run before prost decodes them: prost allocates
//! a struct for every element of a repeated message field as it goes, so 64 KiB of empty
//! elements (2 bytes each) would cost megabytes before any count could be checked. This pass
//! allocates nothing and bounds the number of such elements first.
//!
//! Every submessage or map entry prost would allocate is a length-delimited field whose
//! content is itself valid protobuf; strings that happen to parse as protobuf are counted
//! too, so the count is an upper bound. Nesting is followed to [`MAX_DEPTH`]: USP's schema
//! nests messages no deeper than that, so content below it is never decoded into structs.

/// Deepest nesting followed: a Record's payload Msg (2 levels) plus the deepest Msg path
/// (Body > Response > SetResp > UpdatedObjectResult > OperationStatus > OperationFailure >
/// UpdatedInstanceFailure > ParameterError, 9 levels), with room to spare.
pub const MAX_DEPTH: usize = 16;

/// Deepest group nesting skipped, as prost's own recursion limit.
const MAX_GROUP_DEPTH: usize = 100;

/// Why the bytes are not protobuf, at which offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    pub offset: usize,
    pub what: &'static str,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, Malformed> {
    let start = *pos;
    let mut value = 0u64;
    for i in 0..10 {
        let Some(&b) = buf.get(*pos) else {
            return Err(Malformed {
                offset: start,
                what: "truncated varint",
            });
        };
        *pos += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Malformed {
        offset: start,
        what: "varint longer than 10 bytes",
    })
}

fn skip(buf: &[u8], pos: &mut usize, n: u64) -> Result<(), Malformed> {
    let end = usize::try_from(n)
        .ok()
        .and_then(|n| pos.checked_add(n))
        .filter(|&end| end <= buf.len())
        .ok_or(Malformed {
            offset: *pos,
            what: "length past the end",
        })?;
    *pos = end;
    Ok(())
}

/// Reads a key; returns (field number, wire type).
fn key(buf: &[u8], pos: &mut usize) -> Result<(u64, u8), Malformed> {
    let at = *pos;
    let k = varint(buf, pos)?;
    let field = k >> 3;
    if field == 0 || k > u64::from(u32::MAX) {
        return Err(Malformed {
            offset: at,
            what: "invalid field number",
        });
    }
    Ok((field, (k & 7) as u8))
}

/// What prost would allocate for some wire bytes, at most.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Length-delimited fields whose content is valid protobuf: submessages and map entries
    /// (and strings that happen to parse).
    pub messages: usize,
    /// All length-delimited fields: the above plus strings and bytes, one allocation each.
    pub len_fields: usize,
}

/// Counts the length-delimited fields of `buf` at any depth up to `MAX_DEPTH - depth`; an
/// error when `buf` itself is not valid protobuf.
pub fn count(buf: &[u8], depth: usize) -> Result<Counts, Malformed> {
    let mut pos = 0;
    let mut counts = Counts::default();
    while pos < buf.len() {
        let (field, wire_type) = key(buf, &mut pos)?;
        match wire_type {
            0 => {
                varint(buf, &mut pos)?;
            }
            1 => skip(buf, &mut pos, 8)?,
            5 => skip(buf, &mut pos, 4)?,
            2 => {
                let len = varint(buf, &mut pos)?;
                let start = pos;
                skip(buf, &mut pos, len)?;
                counts.len_fields = counts.len_fields.saturating_add(1);
                if depth + 1 < MAX_DEPTH {
                    // Content that is not protobuf is a string or bytes: one allocation,
                    // bounded by its length, which the record size bounds.
                    if let Ok(inner) = count(&buf[start..pos], depth + 1) {
                        counts.messages = counts
                            .messages
                            .saturating_add(1)
                            .saturating_add(inner.messages);
                        counts.len_fields = counts.len_fields.saturating_add(inner.len_fields);
                    }
                }
            }
            3 => skip_group(buf, &mut pos, field)?,
            _ => {
                return Err(Malformed {
                    offset: pos,
                    what: "invalid wire type",
                })
            }
        }
    }
    Ok(counts)
}

/// Skips a group (unknown to USP's schema, so prost skips it without allocating) up to its
/// END_GROUP, iteratively so that hostile nesting cannot exhaust the stack.
fn skip_group(buf: &[u8], pos: &mut usize, field: u64) -> Result<(), Malformed> {
    let mut open = vec![field];
    while let Some(&innermost) = open.last() {
        if *pos >= buf.len() {
            return Err(Malformed {
                offset: *pos,
                what: "unterminated group",
            });
        }
        let at = *pos;
        let (f, wire_type) = key(buf, pos)?;
        match wire_type {
            0 => {
                varint(buf, pos)?;
            }
            1 => skip(buf, pos, 8)?,
            5 => skip(buf, pos, 4)?,
            2 => {
                let len = varint(buf, pos)?;
                skip(buf, pos, len)?;
            }
            3 => {
                if open.len() >= MAX_GROUP_DEPTH {
                    return Err(Malformed {
                        offset: at,
                        what: "groups nested too deep",
                    });
                }
                open.push(f);
            }
            4 if f == innermost => {
                open.pop();
            }
            _ => {
                return Err(Malformed {
                    offset: at,
                    what: "mismatched group end or invalid wire type",
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nested_messages_not_scalars_or_text() {
        // field 1 LEN { field 1 varint 5 }, field 2 LEN "Device." (not protobuf), field 3 = 7
        let buf = [
            0x0a, 0x02, 0x08, 0x05, 0x12, 0x07, b'D', b'e', b'v', b'i', b'c', b'e', b'.', 0x18,
            0x07,
        ];
        let c = count(&buf, 0).unwrap();
        assert_eq!((c.messages, c.len_fields), (1, 2));
        // Empty LEN fields are empty messages: each counts.
        assert_eq!(count(&[0x0a, 0x00].repeat(50), 0).unwrap().messages, 50);
        // Nested twice: outer and inner both count.
        assert_eq!(count(&[0x0a, 0x02, 0x0a, 0x00], 0).unwrap().messages, 2);
    }

    #[test]
    fn refuses_what_prost_refuses() {
        for bad in [
            &[0x0a][..],
            &[0x0a, 0x05, 0x00],
            &[0x00, 0x00],
            &[0x0f],
            &[0x0c],
            &[0x0b, 0x10, 0x01],
            &[0x0b, 0x14],
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            &[0x0d, 0x01, 0x02],
        ] {
            assert!(count(bad, 0).is_err(), "{bad:02x?}");
        }
    }

    #[test]
    fn skips_groups_and_stops_at_max_depth() {
        // An unknown group with a varint inside, then a varint field: nothing to allocate.
        let c = count(&[0x0b, 0x10, 0x01, 0x0c, 0x08, 0x01], 0).unwrap();
        assert_eq!(c, Counts::default());
        let mut deep = vec![0x0b; 5000];
        deep.extend(vec![0x0c; 5000]);
        assert!(count(&deep, 0).is_err());
        // 40 levels of LEN nesting: only the first MAX_DEPTH - 1 are followed.
        let mut nested: Vec<u8> = Vec::new();
        for _ in 0..40 {
            let mut outer = vec![0x0a, nested.len() as u8];
            outer.extend(&nested);
            nested = outer;
        }
        assert_eq!(count(&nested, 0).unwrap().messages, MAX_DEPTH - 1);
    }
}

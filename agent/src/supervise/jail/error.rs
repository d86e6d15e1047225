//! The error of a step of building a jail (mounts, ids, network, the init's own confinement).
//! The jail's PID 1 writes it as text into its error pipe, so its `Display` is the message the
//! runner, the agent's log and the EU's fault message show.

use std::fmt;
use std::io;

use nix::errno::Errno;

/// Which step failed (with the path or value it concerned), and the error the kernel gave.
#[derive(Debug)]
pub struct JailError {
    step: String,
    cause: Option<Cause>,
}

#[derive(Debug)]
enum Cause {
    Errno(Errno),
    Io(io::Error),
}

impl JailError {
    /// `step` failed with the kernel's `errno` (a nix call).
    pub fn errno(step: impl Into<String>, errno: Errno) -> Self {
        JailError {
            step: step.into(),
            cause: Some(Cause::Errno(errno)),
        }
    }

    /// `step` failed with `e` (a std or sandbox call).
    pub fn io(step: impl Into<String>, e: io::Error) -> Self {
        JailError {
            step: step.into(),
            cause: Some(Cause::Io(e)),
        }
    }

    /// A step that cannot go on, no system call at fault (`step` says why).
    pub fn refused(step: impl Into<String>) -> Self {
        JailError {
            step: step.into(),
            cause: None,
        }
    }

    /// The step, e.g. `bind /data onto /rootfs/data`.
    pub fn step(&self) -> &str {
        &self.step
    }

    /// The errno the step failed with, if a system call failed.
    pub fn os_error(&self) -> Option<i32> {
        match &self.cause {
            Some(Cause::Errno(e)) => Some(*e as i32),
            Some(Cause::Io(e)) => e.raw_os_error(),
            None => None,
        }
    }
}

impl fmt::Display for JailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Some(Cause::Errno(e)) => write!(f, "jail: {}: {e}", self.step),
            Some(Cause::Io(e)) => write!(f, "jail: {}: {e}", self.step),
            None => write!(f, "jail: {}", self.step),
        }
    }
}

impl std::error::Error for JailError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Some(Cause::Errno(e)) => Some(e),
            Some(Cause::Io(e)) => Some(e),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_step_and_keep_the_errno() {
        let e = JailError::errno("chdir /data", Errno::ENOENT);
        assert_eq!(
            e.to_string(),
            format!("jail: chdir /data: {}", Errno::ENOENT)
        );
        assert_eq!(e.os_error(), Some(libc::ENOENT));
        assert_eq!(e.step(), "chdir /data");
        let e = JailError::io(
            "create /dev/null",
            io::Error::from_raw_os_error(libc::EROFS),
        );
        assert_eq!(e.os_error(), Some(libc::EROFS));
        assert!(e.to_string().starts_with("jail: create /dev/null: "), "{e}");
        let e = JailError::refused("mount point /r/proc is missing");
        assert_eq!(e.to_string(), "jail: mount point /r/proc is missing");
        assert_eq!(e.os_error(), None);
    }
}

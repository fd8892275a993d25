//! Errors as futexscope shows them: one printer for an error and its causes, and the errno
//! classification of failures that come from the kernel.

use std::{error::Error, fmt, io};

/// An error with its chain of causes. `{}` prints them on one line, joined by `: ` (for notes);
/// `{:#}` prints one per line, each cause under `caused by:` (for the final error message).
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            if f.alternate() {
                write!(f, "\n  caused by: {cause}")?;
            } else {
                write!(f, ": {cause}")?;
            }
            source = cause.source();
        }
        Ok(())
    }
}

/// Prints `err` and its causes to stderr as futexscope's error message.
pub fn print(err: &(dyn Error + 'static)) {
    eprintln!("futexscope: error: {:#}", Chain(err));
}

/// The errno of the first operating-system error in `err`'s chain of causes (aya keeps the
/// `io::Error` of each failed system call there).
pub fn errno(err: &(dyn Error + 'static)) -> Option<i32> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(errno) = err
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(errno);
        }
        current = err.source();
    }
    None
}

/// Whether the kernel refused `err`'s system call for lack of privilege (`EPERM`, `EACCES`).
pub fn is_permission_denied(err: &(dyn Error + 'static)) -> bool {
    matches!(errno(err), Some(libc::EPERM | libc::EACCES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot load")]
    struct Outer(#[source] io::Error);

    #[test]
    fn chains_print_on_one_line_or_one_cause_per_line() {
        let err = Outer(io::Error::from_raw_os_error(libc::EPERM));
        let cause = io::Error::from_raw_os_error(libc::EPERM).to_string();
        assert_eq!(Chain(&err).to_string(), format!("cannot load: {cause}"));
        assert_eq!(
            format!("{:#}", Chain(&err)),
            format!("cannot load\n  caused by: {cause}")
        );
    }

    #[test]
    fn the_errno_is_found_among_the_causes() {
        let denied = Outer(io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(errno(&denied), Some(libc::EACCES));
        assert!(is_permission_denied(&denied));
        let other = Outer(io::Error::from_raw_os_error(libc::EINVAL));
        assert!(!is_permission_denied(&other));
        assert_eq!(errno(&io::Error::other("no errno")), None);
    }
}

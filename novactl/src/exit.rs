//! Exit codes: what a script can tell apart without reading the message. The table is
//! printed by `novactl --help` ([`HELP`]); [`code`] maps an error to its code.

use nova_http::Error;

/// Everything went well.
pub const OK: u8 = 0;
/// Any other error: a bad value the controller refused, a conflict, a failed operation.
pub const OTHER: u8 = 1;
/// The command line is wrong: clap's own code for usage errors, which clap exits with.
#[cfg(test)]
pub const USAGE: u8 = 2;
/// The object (or context) named does not exist (HTTP 404).
pub const NOT_FOUND: u8 = 3;
/// The token was refused (401) or may not do this (403).
pub const AUTH: u8 = 4;
/// The controller could not be reached: refused, timed out, DNS, TLS.
pub const CONNECTION: u8 = 5;

/// The exit codes, as `novactl --help` shows them.
pub const HELP: &str = "\
Exit codes:
  0  success
  1  other errors (a value the controller refused, a conflict, a failed migration)
  2  usage: the command line is wrong
  3  not found: the VM, host, operation, token or context named does not exist
  4  auth: the token is missing or refused (401), or may not do this (403)
  5  connection: the controller cannot be reached (refused, timeout, DNS, TLS)";

/// An error novactl finds itself that has a code of its own.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Something named on the command line does not exist (a context).
    #[error("{0}")]
    NotFound(String),
}

/// The exit code of `e`: the first cause that has one decides.
pub fn code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return match f {
                Failure::NotFound(_) => NOT_FOUND,
            };
        }
        if let Some(h) = cause.downcast_ref::<Error>() {
            return match h {
                Error::Status { status: 404, .. } => NOT_FOUND,
                Error::Status {
                    status: 401 | 403, ..
                } => AUTH,
                Error::Unreachable { .. } => CONNECTION,
                _ => OTHER,
            };
        }
    }
    OTHER
}

#[cfg(test)]
mod tests {
    use super::*;
    use nova_http::{ErrorBody, Method};

    fn status(status: u16) -> anyhow::Error {
        anyhow::Error::new(Error::Status {
            method: Method::GET,
            url: "http://x/v1/vms/a".into(),
            status,
            body: ErrorBody::new("no"),
        })
        .context("getting the VM")
    }

    #[test]
    fn each_kind_of_failure_has_its_code() {
        assert_eq!(code(&status(404)), NOT_FOUND);
        assert_eq!(code(&status(401)), AUTH);
        assert_eq!(code(&status(403)), AUTH);
        assert_eq!(code(&status(400)), OTHER);
        let down = Error::Unreachable {
            url: "http://x".into(),
            reason: "cannot connect".into(),
        };
        assert_eq!(code(&down.into()), CONNECTION);
        assert_eq!(
            code(&Failure::NotFound("no context".into()).into()),
            NOT_FOUND
        );
        assert_eq!(code(&anyhow::anyhow!("anything else")), OTHER);
        assert_eq!(OK, 0);
        // clap exits with this code on a usage error; nothing else may use it.
        let usage: clap::Error = clap::Error::new(clap::error::ErrorKind::InvalidValue);
        assert_eq!(usage.exit_code(), USAGE as i32);
    }
}

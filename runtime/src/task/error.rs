//! [`JoinError`]: why a tasklet did not return a value, and the slot its
//! outcome waits in for its `JoinHandle`.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::io;

use super::header::{Interrupt, Unwind};

/// Where a spawned tasklet's result waits for its `JoinHandle`.
pub(crate) type ResultSlot<T> = RefCell<Option<Result<T, JoinError>>>;

/// Why a tasklet did not return a value.
pub struct JoinError {
    repr: Repr,
}

enum Repr {
    Panic(Box<dyn Any + Send + 'static>),
    Killed,
}

impl JoinError {
    pub(crate) fn killed() -> JoinError {
        JoinError { repr: Repr::Killed }
    }

    pub(crate) fn from_payload(payload: Box<dyn Any + Send + 'static>) -> JoinError {
        match payload.downcast_ref::<Unwind>() {
            Some(Unwind(Interrupt::Kill, _)) => JoinError::killed(),
            _ => JoinError {
                repr: Repr::Panic(payload),
            },
        }
    }

    /// The tasklet panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic(_))
    }

    /// The tasklet was killed (`JoinHandle::kill`, or dispatcher shutdown).
    pub fn is_killed(&self) -> bool {
        matches!(self.repr, Repr::Killed)
    }

    /// The panic payload; panics if the tasklet was killed instead.
    ///
    /// Re-raise it in the caller with [`std::panic::resume_unwind`].
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        match self.try_into_panic() {
            Ok(p) => p,
            Err(e) => panic!("JoinError::into_panic called on {e}"),
        }
    }

    /// The panic payload, or `Err(self)` if the tasklet was killed.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match self.repr {
            Repr::Panic(p) => Ok(p),
            Repr::Killed => Err(self),
        }
    }

    /// The panic message, when the payload is a string.
    pub fn panic_message(&self) -> Option<&str> {
        match &self.repr {
            Repr::Panic(p) => payload_str(p.as_ref()),
            Repr::Killed => None,
        }
    }
}

/// A panic payload's message, when it is a `&str` or `String`.
pub(crate) fn payload_str(p: &(dyn Any + Send)) -> Option<&str> {
    p.downcast_ref::<&'static str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Killed => f.write_str("tasklet was killed"),
            Repr::Panic(p) => match payload_str(p.as_ref()) {
                Some(m) => write!(f, "tasklet panicked: {m}"),
                None => f.write_str("tasklet panicked"),
            },
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Killed => f.write_str("JoinError::Killed"),
            Repr::Panic(p) => write!(f, "JoinError::Panic({:?})", payload_str(p.as_ref())),
        }
    }
}

impl std::error::Error for JoinError {}

impl From<JoinError> for io::Error {
    fn from(e: JoinError) -> io::Error {
        io::Error::other(e.to_string())
    }
}

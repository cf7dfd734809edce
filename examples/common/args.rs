//! The examples' command line: `--flag value` (or `--flag=value`) options,
//! `-h`/`--help` printing the example's USAGE text, and clear refusals.
//!
//! ```ignore
//! let mut args = Args::new(USAGE);
//! while let Some(flag) = args.next_flag() {
//!     match flag.as_str() {
//!         "--addr" => addr = args.value(),
//!         "--workers" => workers = Some(args.value_with(positive)),
//!         "--idle-timeout" => idle = args.value_with(seconds),
//!         _ => args.unknown(),
//!     }
//! }
//! ```
//!
//! Every mistake — an unknown argument, a missing or malformed value — is
//! reported as `NAME: MESSAGE` followed by the usage, on stderr, and exits
//! with status 2; `NAME` is the first word of the usage text (`echo_server`
//! for `"echo_server: the gevent echo server ..."`).

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

/// The command-line arguments of an example, read one flag at a time.
pub struct Args {
    usage: &'static str,
    rest: std::iter::Skip<std::env::Args>,
    /// The flag last returned by [`next_flag`](Self::next_flag).
    flag: String,
    /// The `value` of a `--flag=value` argument, until it is taken.
    inline: Option<String>,
}

impl Args {
    /// The arguments of this process (after the program name).
    pub fn new(usage: &'static str) -> Args {
        Args {
            usage,
            rest: std::env::args().skip(1),
            flag: String::new(),
            inline: None,
        }
    }

    /// The next flag, or `None` at the end. `-h`/`--help` prints the usage
    /// to stdout and exits 0; anything that is not a `--flag` is refused.
    pub fn next_flag(&mut self) -> Option<String> {
        if self.inline.is_some() {
            self.fail(format_args!("{} takes no value", self.flag));
        }
        let arg = self.rest.next()?;
        if arg == "-h" || arg == "--help" {
            println!("{}", self.usage);
            std::process::exit(0);
        }
        match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                self.flag = flag.to_owned();
                self.inline = Some(value.to_owned());
            }
            _ => self.flag = arg,
        }
        if !self.flag.starts_with("--") {
            self.unknown();
        }
        Some(self.flag.clone())
    }

    /// The value of the current flag; refuses a missing one.
    pub fn value(&mut self) -> String {
        match self.inline.take().or_else(|| self.rest.next()) {
            Some(v) => v,
            None => self.fail(format_args!("{} needs a value", self.flag)),
        }
    }

    /// The value of the current flag, parsed with `FromStr`.
    pub fn parse<T: FromStr>(&mut self) -> T
    where
        T::Err: Display,
    {
        self.value_with(|v| v.parse::<T>().map_err(|e| e.to_string()))
    }

    /// The value of the current flag, converted by `convert` (whose error
    /// says what was expected, e.g. [`seconds`]'s).
    pub fn value_with<T>(&mut self, convert: impl FnOnce(&str) -> Result<T, String>) -> T {
        let v = self.value();
        match convert(&v) {
            Ok(t) => t,
            Err(e) => self.fail(format_args!("{} '{v}': {e}", self.flag)),
        }
    }

    /// Refuses the current flag as unknown.
    pub fn unknown(&self) -> ! {
        self.fail(format_args!("unknown argument '{}'", self.flag))
    }

    /// Reports `message` and the usage on stderr, and exits with status 2.
    pub fn fail(&self, message: impl Display) -> ! {
        fail(self.usage, message)
    }
}

/// Reports `message` and `usage` on stderr as the example named by `usage`,
/// and exits with status 2 (for checks across flags, after parsing).
pub fn fail(usage: &str, message: impl Display) -> ! {
    let name = usage.split(':').next().unwrap_or("example");
    eprintln!("{name}: {message}\n\n{usage}");
    std::process::exit(2)
}

/// For the examples without options: `--help` prints `usage`, any argument
/// is refused.
pub fn no_options(usage: &'static str) {
    let mut args = Args::new(usage);
    if args.next_flag().is_some() {
        args.unknown();
    }
}

/// A positive whole number (`--workers`, `--conns`).
pub fn positive(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a positive whole number".to_owned()),
    }
}

/// A positive number of seconds, fractions allowed (`--idle-timeout 0.5`).
pub fn seconds(v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "expected a positive number of seconds".to_owned())
}

//! [`OpenOptions`]: std's, with the open on the offload pool.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::File;
use crate::offload::unblock;

/// Options for opening a [`File`] (std's `OpenOptions`; the open runs on
/// the offload pool).
///
/// ```
/// use std::io::Write;
///
/// let path = std::env::temp_dir().join(format!("tasklet-doc-append-{}", std::process::id()));
/// tasklet::dispatch(|| {
///     for word in ["a", "b"] {
///         let mut log = tasklet::fs::OpenOptions::new().append(true).create(true).open(&path).unwrap();
///         log.write_all(word.as_bytes()).unwrap();
///     }
///     assert_eq!(tasklet::fs::read_to_string(&path).unwrap(), "ab");
///     tasklet::fs::remove_file(&path).unwrap();
/// });
/// ```
#[derive(Clone, Debug)]
pub struct OpenOptions {
    std: fs::OpenOptions,
}

impl OpenOptions {
    /// All options off (as std's).
    pub fn new() -> OpenOptions {
        OpenOptions {
            std: fs::OpenOptions::new(),
        }
    }

    /// Open for reading.
    pub fn read(&mut self, read: bool) -> &mut OpenOptions {
        self.std.read(read);
        self
    }

    /// Open for writing.
    pub fn write(&mut self, write: bool) -> &mut OpenOptions {
        self.std.write(write);
        self
    }

    /// Open for appending: every write goes to the end of the file.
    pub fn append(&mut self, append: bool) -> &mut OpenOptions {
        self.std.append(append);
        self
    }

    /// Truncate the file to 0 bytes when opened for writing.
    pub fn truncate(&mut self, truncate: bool) -> &mut OpenOptions {
        self.std.truncate(truncate);
        self
    }

    /// Create the file if it does not exist.
    pub fn create(&mut self, create: bool) -> &mut OpenOptions {
        self.std.create(create);
        self
    }

    /// Create the file, failing with `AlreadyExists` if it exists.
    pub fn create_new(&mut self, create_new: bool) -> &mut OpenOptions {
        self.std.create_new(create_new);
        self
    }

    /// Permission bits of a newly created file (before the umask; Unix
    /// `OpenOptionsExt::mode`).
    pub fn mode(&mut self, mode: u32) -> &mut OpenOptions {
        self.std.mode(mode);
        self
    }

    /// Extra `open(2)` flags (Unix `OpenOptionsExt::custom_flags`).
    pub fn custom_flags(&mut self, flags: i32) -> &mut OpenOptions {
        self.std.custom_flags(flags);
        self
    }

    /// Opens `path` with these options, on the offload pool.
    pub fn open<P: AsRef<Path>>(&self, path: P) -> io::Result<File> {
        let opts = self.std.clone();
        let path = path.as_ref().to_path_buf();
        unblock(move || opts.open(path)).map(File::from_std)
    }
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions::new()
    }
}

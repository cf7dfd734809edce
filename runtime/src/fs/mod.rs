//! Cooperative file I/O in the shape of `std::fs`: `tasklet::fs`.
//!
//! Files have no readiness to wait for (epoll reports a regular file as
//! always ready, and a read from disk blocks anyway), so every operation
//! here runs on the runtime's offload threads ([`unblock`](crate::unblock()))
//! while the calling tasklet parks; the dispatcher keeps running the other
//! tasklets. The functions mirror `std::fs` and return std's types
//! ([`Metadata`], [`DirEntry`], [`Permissions`]…). [`File`] adds read-ahead
//! and write-behind so a large file read or written in small pieces costs
//! one thread hop per batch, not one per call.
//!
//! Every offloaded operation owns its buffers and paths: a tasklet killed
//! or timed out while one runs unwinds at once, and the operation finishes
//! on its thread without touching the tasklet's memory. Outside a
//! dispatcher everything runs on the calling thread, like std.
//!
//! ```
//! use std::io::{Read, Write};
//!
//! let dir = std::env::temp_dir().join(format!("tasklet-doc-fs-{}", std::process::id()));
//! tasklet::dispatch(|| {
//!     tasklet::fs::create_dir_all(dir.join("a/b")).unwrap();
//!     tasklet::fs::write(dir.join("a/b/hello.txt"), "hello").unwrap();
//!     assert_eq!(tasklet::fs::read_to_string(dir.join("a/b/hello.txt")).unwrap(), "hello");
//!
//!     let mut f = tasklet::fs::File::create(dir.join("a/data.bin")).unwrap();
//!     for i in 0..256u32 {
//!         f.write_all(&[i as u8; 4096]).unwrap(); // 1 MiB in 4 KiB writes
//!     }
//!     drop(f); // waits until the queued writes are in the file
//!     assert_eq!(tasklet::fs::metadata(dir.join("a/data.bin")).unwrap().len(), 1 << 20);
//!
//!     let mut f = tasklet::fs::File::open(dir.join("a/data.bin")).unwrap();
//!     let mut chunk = [0u8; 4096];
//!     f.read_exact(&mut chunk).unwrap(); // one hop reads ahead 64 KiB
//!     assert_eq!(chunk, [0u8; 4096]);
//!
//!     tasklet::fs::rename(dir.join("a/data.bin"), dir.join("a/moved.bin")).unwrap();
//!     let mut names: Vec<String> = tasklet::fs::read_dir(dir.join("a"))
//!         .unwrap()
//!         .map(|e| e.unwrap().file_name().into_string().unwrap())
//!         .collect();
//!     names.sort();
//!     assert_eq!(names, ["b", "moved.bin"]);
//!     tasklet::fs::remove_file(dir.join("a/moved.bin")).unwrap();
//!     tasklet::fs::remove_dir_all(&dir).unwrap();
//! });
//! ```

mod file;
mod job;
mod open_options;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use std::fs::{DirEntry, FileType, Metadata, Permissions};

pub use file::File;
pub use open_options::OpenOptions;

use crate::unblock;

fn owned(path: impl AsRef<Path>) -> PathBuf {
    path.as_ref().to_path_buf()
}

/// Reads a whole file into a vector (std's `fs::read`).
pub fn read<P: AsRef<Path>>(path: P) -> io::Result<Vec<u8>> {
    let path = owned(path);
    unblock(move || std::fs::read(path))
}

/// Reads a whole file into a string; invalid UTF-8 is `InvalidData` (std's
/// `fs::read_to_string`).
pub fn read_to_string<P: AsRef<Path>>(path: P) -> io::Result<String> {
    let path = owned(path);
    unblock(move || std::fs::read_to_string(path))
}

/// Writes `contents` as the whole file, creating or truncating it (std's
/// `fs::write`). The bytes are copied first, so the write owns them.
pub fn write<P: AsRef<Path>, C: AsRef<[u8]>>(path: P, contents: C) -> io::Result<()> {
    let path = owned(path);
    let contents = contents.as_ref().to_vec();
    unblock(move || std::fs::write(path, contents))
}

/// Copies a file's contents and permissions, returning the bytes copied
/// (std's `fs::copy`: in the kernel where it can, `copy_file_range`).
pub fn copy<P: AsRef<Path>, Q: AsRef<Path>>(from: P, to: Q) -> io::Result<u64> {
    let (from, to) = (owned(from), owned(to));
    unblock(move || std::fs::copy(from, to))
}

/// Metadata of a path, following symbolic links (std's `fs::metadata`).
pub fn metadata<P: AsRef<Path>>(path: P) -> io::Result<Metadata> {
    let path = owned(path);
    unblock(move || std::fs::metadata(path))
}

/// Metadata of a path without following a final symbolic link.
pub fn symlink_metadata<P: AsRef<Path>>(path: P) -> io::Result<Metadata> {
    let path = owned(path);
    unblock(move || std::fs::symlink_metadata(path))
}

/// Whether `path` exists; errors other than "not found" are returned (std's
/// `fs::exists`).
pub fn exists<P: AsRef<Path>>(path: P) -> io::Result<bool> {
    let path = owned(path);
    unblock(move || path.try_exists())
}

/// Renames a file or directory, replacing `to` if it is a file (std's `fs::rename`).
pub fn rename<P: AsRef<Path>, Q: AsRef<Path>>(from: P, to: Q) -> io::Result<()> {
    let (from, to) = (owned(from), owned(to));
    unblock(move || std::fs::rename(from, to))
}

/// Removes a file (std's `fs::remove_file`).
pub fn remove_file<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let path = owned(path);
    unblock(move || std::fs::remove_file(path))
}

/// Creates a directory (std's `fs::create_dir`).
pub fn create_dir<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let path = owned(path);
    unblock(move || std::fs::create_dir(path))
}

/// Creates a directory and any missing parents (std's `fs::create_dir_all`).
pub fn create_dir_all<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let path = owned(path);
    unblock(move || std::fs::create_dir_all(path))
}

/// Removes an empty directory (std's `fs::remove_dir`).
pub fn remove_dir<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let path = owned(path);
    unblock(move || std::fs::remove_dir(path))
}

/// Removes a directory and everything in it (std's `fs::remove_dir_all`).
pub fn remove_dir_all<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let path = owned(path);
    unblock(move || std::fs::remove_dir_all(path))
}

/// The canonical, absolute form of a path (std's `fs::canonicalize`).
pub fn canonicalize<P: AsRef<Path>>(path: P) -> io::Result<PathBuf> {
    let path = owned(path);
    unblock(move || std::fs::canonicalize(path))
}

/// Creates a hard link `link` to `original` (std's `fs::hard_link`).
pub fn hard_link<P: AsRef<Path>, Q: AsRef<Path>>(original: P, link: Q) -> io::Result<()> {
    let (original, link) = (owned(original), owned(link));
    unblock(move || std::fs::hard_link(original, link))
}

/// The target of a symbolic link (std's `fs::read_link`).
pub fn read_link<P: AsRef<Path>>(path: P) -> io::Result<PathBuf> {
    let path = owned(path);
    unblock(move || std::fs::read_link(path))
}

/// Changes the permissions of a file or directory (std's `fs::set_permissions`).
pub fn set_permissions<P: AsRef<Path>>(path: P, perm: Permissions) -> io::Result<()> {
    let path = owned(path);
    unblock(move || std::fs::set_permissions(path, perm))
}

/// How many directory entries one offloaded call reads.
const READ_DIR_BATCH: usize = 256;

/// Iterates over a directory's entries (std's `fs::read_dir`): entries are
/// read on the offload pool, 256 per hop. [`DirEntry`] is
/// std's: its `file_name`, `path` and usually `file_type` need no system
/// call; its `metadata` does (use [`metadata`] on its `path` to offload it).
pub fn read_dir<P: AsRef<Path>>(path: P) -> io::Result<ReadDir> {
    let path = owned(path);
    let inner = unblock(move || std::fs::read_dir(path))?;
    Ok(ReadDir {
        inner: Some(inner),
        batch: Vec::new().into_iter(),
        done: false,
    })
}

/// Iterator returned by [`read_dir`]. Entries come in no particular order;
/// `.` and `..` are skipped.
pub struct ReadDir {
    /// `None` while a batch is being read (and for good if that read's
    /// tasklet was interrupted).
    inner: Option<std::fs::ReadDir>,
    batch: std::vec::IntoIter<io::Result<DirEntry>>,
    done: bool,
}

impl Iterator for ReadDir {
    type Item = io::Result<DirEntry>;

    fn next(&mut self) -> Option<io::Result<DirEntry>> {
        if let Some(e) = self.batch.next() {
            return Some(e);
        }
        if self.done {
            return None;
        }
        let Some(mut inner) = self.inner.take() else {
            self.done = true;
            return Some(Err(io::Error::other(
                "tasklet::fs::ReadDir: an earlier read of this directory was interrupted",
            )));
        };
        let (inner, batch) = unblock(move || {
            let batch: Vec<_> = inner.by_ref().take(READ_DIR_BATCH).collect();
            (inner, batch)
        });
        if batch.len() < READ_DIR_BATCH {
            self.done = true;
        }
        self.inner = Some(inner);
        self.batch = batch.into_iter();
        self.batch.next()
    }
}

impl fmt::Debug for ReadDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadDir").field("done", &self.done).finish()
    }
}

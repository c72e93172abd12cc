//! File identity for the tailer.
//!
//! A path is not an identity: log rotation renames files and creates new ones under
//! the same name. We identify a file by device + inode, and keep a checksum of its
//! first bytes to catch inode reuse (a rotated-away file deleted and its inode handed
//! to the new file).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;

// The type is in `domain`, beside the checkpoint that carries it into the store;
// taking and checking one reads the file, so that stays here, with the other IO.
use crate::domain::Fingerprint;

/// How many leading bytes the head checksum covers at most.
pub const HEAD_BYTES: u64 = 256;

impl Fingerprint {
    /// Fingerprint an open file. Restores the read position afterwards.
    pub fn of(file: &mut File) -> io::Result<Fingerprint> {
        let meta = file.metadata()?;
        let head_len = meta.len().min(HEAD_BYTES);
        let head_hash = head_hash(file, head_len)?;
        Ok(Fingerprint {
            dev: meta.dev(),
            inode: meta.ino(),
            head_len,
            head_hash,
        })
    }

    /// Whether `file` is the file this fingerprint was taken of: same device and inode,
    /// and the same leading bytes (it may have grown since).
    pub fn matches(&self, file: &mut File) -> io::Result<bool> {
        let meta = file.metadata()?;
        if meta.dev() != self.dev || meta.ino() != self.inode || meta.len() < self.head_len {
            return Ok(false);
        }
        Ok(head_hash(file, self.head_len)? == self.head_hash)
    }

    /// Whether `file` starts with the same bytes, whatever its inode: a copy of the
    /// file (copytruncate) does.
    pub fn same_head(&self, file: &mut File) -> io::Result<bool> {
        let len = file.metadata()?.len();
        Ok(self.head_len > 0
            && len >= self.head_len
            && head_hash(file, self.head_len)? == self.head_hash)
    }

    /// Whether the head checksum should be refreshed because the file has grown past
    /// the bytes it covers (so a later inode reuse is still caught).
    pub fn is_partial(&self) -> bool {
        self.head_len < HEAD_BYTES
    }
}

fn head_hash(file: &mut File, len: u64) -> io::Result<u64> {
    let pos = file.stream_position()?;
    file.seek(SeekFrom::Start(0))?;
    let mut buf = Vec::with_capacity(len as usize);
    file.by_ref().take(len).read_to_end(&mut buf)?;
    file.seek(SeekFrom::Start(pos))?;
    let digest = blake3::hash(&buf);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    Ok(u64::from_le_bytes(first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn grown_file_still_matches_and_rewritten_head_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short_then_grown.log");
        std::fs::write(&path, b"first line\n").unwrap();
        let mut f = File::open(&path).unwrap();
        let fp = Fingerprint::of(&mut f).unwrap();
        assert!(fp.is_partial());

        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        w.write_all(b"second line\n").unwrap();
        assert!(fp.matches(&mut File::open(&path).unwrap()).unwrap());

        // Same inode, different leading bytes: treated as a different file.
        std::fs::write(&path, b"other line\n").unwrap();
        assert!(!fp.matches(&mut File::open(&path).unwrap()).unwrap());
    }

    #[test]
    fn a_copy_has_the_same_head_but_is_not_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copied.log");
        std::fs::write(&path, b"line one\nline two\n").unwrap();
        let fp = Fingerprint::of(&mut File::open(&path).unwrap()).unwrap();
        let copy = dir.path().join("copied.log.1");
        std::fs::copy(&path, &copy).unwrap();
        let mut c = File::open(&copy).unwrap();
        assert!(fp.same_head(&mut c).unwrap());
        assert!(!fp.matches(&mut c).unwrap());
    }

    #[test]
    fn a_new_file_under_the_same_name_does_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("renamed.log");
        std::fs::write(&path, b"same content\n").unwrap();
        let fp = Fingerprint::of(&mut File::open(&path).unwrap()).unwrap();
        std::fs::rename(&path, dir.path().join("renamed.log.1")).unwrap();
        std::fs::write(&path, b"same content\n").unwrap();
        assert!(!fp.matches(&mut File::open(&path).unwrap()).unwrap());
    }
}

//! Files enrolld trusts: the configuration, the secrets, the queue key, the
//! extra CA file and the detector model. Whoever can write one of them can
//! point uploads at their own server, so, as ssh does, a file is refused
//! when it or a directory on its path can be written by other users.
//!
//! - the file must be a regular file owned by root or by enrolld's user, and
//!   not writable by group or others;
//! - every directory from `/` down must be owned by root or enrolld's user,
//!   and not writable by group or others unless it has the sticky bit (like
//!   `/tmp`, where others cannot rename or delete what is not theirs);
//! - private files (configuration, secrets, key) must not be readable by
//!   others either.
//!
//! Every refusal names the path and the `chmod` that fixes it.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Largest file enrolld reads as configuration, secret or certificate.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Whether others may read the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privacy {
    /// A secret or the configuration: not readable by others.
    Private,
    /// A certificate or model: anyone may read it, only its owner write it.
    Public,
}

fn refused(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, why)
}

fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == rustix::process::geteuid().as_raw()
}

/// Checks the file and every directory above it (see the module docs).
pub fn check(path: &Path, privacy: Privacy) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is a directory, not a file",
        ));
    }
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is not a regular file (a FIFO, socket or device)",
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refused(format!(
            "writable by other users (mode {mode:o}); run chmod go-w {}",
            path.display()
        )));
    }
    if privacy == Privacy::Private && mode & 0o004 != 0 {
        return Err(refused(format!(
            "readable by other users (mode {mode:o}); run chmod o-rwx {}",
            path.display()
        )));
    }
    if !trusted_owner(meta.uid()) {
        return Err(refused(format!(
            "owned by uid {}, neither root nor enrolld's user; run chown root {}",
            meta.uid(),
            path.display()
        )));
    }
    let full = std::fs::canonicalize(path)?;
    let mut dir: Option<PathBuf> = full.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let m = std::fs::metadata(&d)?;
        let mode = m.mode() & 0o7777;
        let sticky = mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !sticky {
            return Err(refused(format!(
                "directory {} is writable by other users (mode {mode:o}), who could replace the file; \
                 run chmod go-w {}",
                d.display(),
                d.display()
            )));
        }
        if !trusted_owner(m.uid()) {
            return Err(refused(format!(
                "directory {} is owned by uid {}, neither root nor enrolld's user",
                d.display(),
                m.uid()
            )));
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    Ok(())
}

/// Reads at most [`MAX_FILE_BYTES`] of a file that passes [`check`].
pub fn read(path: &Path, privacy: Privacy) -> std::io::Result<Vec<u8>> {
    check(path, privacy)?;
    let file = std::fs::File::open(path)?;
    // The file checked may have been swapped since; check what was opened.
    let meta = file.metadata()?;
    if !meta.is_file() || meta.permissions().mode() & 0o022 != 0 {
        return Err(refused("changed while being checked".into()));
    }
    let mut buf = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    Ok(buf)
}

/// Creates `path`, which must not exist, readable by its owner only (mode
/// 0600 whatever the umask), and syncs it: for keys, secrets and configs
/// that enrolld's own tools write.
pub fn write_new_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, mode: u32) -> PathBuf {
        let p = dir.join("f");
        std::fs::write(&p, b"x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn modes_that_let_others_write_are_refused_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        for (mode, private_ok, public_ok) in [
            (0o600, true, true),
            (0o400, true, true),
            (0o640, true, true),
            (0o644, false, true),
            (0o602, false, false),
            (0o620, false, false),
            (0o666, false, false),
        ] {
            let p = file(d.path(), mode);
            let private = check(&p, Privacy::Private);
            let public = check(&p, Privacy::Public);
            assert_eq!(private.is_ok(), private_ok, "{mode:o} private: {private:?}");
            assert_eq!(public.is_ok(), public_ok, "{mode:o} public: {public:?}");
            if let Err(e) = private {
                assert!(e.to_string().contains(&format!("{mode:o}")), "{e}");
                assert!(e.to_string().contains("run chmod"), "{e}");
            }
        }
    }

    #[test]
    fn a_directory_others_can_write_is_refused_unless_sticky() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("conf.d");
        std::fs::create_dir(&sub).unwrap();
        let p = file(&sub, 0o600);
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check(&p, Privacy::Private).unwrap_err().to_string();
        assert!(e.contains("conf.d") && e.contains("chmod go-w"), "{e}");
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check(&p, Privacy::Private).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(check(&p, Privacy::Private).is_err());
    }

    #[test]
    fn directories_fifos_and_missing_files_are_not_read() {
        let d = tempfile::tempdir().unwrap();
        let e = read(d.path(), Privacy::Private).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        let fifo = d.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let e = read(&fifo, Privacy::Private).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read(&d.path().join("none"), Privacy::Private).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}

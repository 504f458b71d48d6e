//! Images from disk: one file, or every image of a directory in name order.

use super::{FrameSource, SourceError};
use crate::capture::frame::{decode_untrusted, DecodeLimits, Frame};
use crate::config::ReceivedPhoto;
use std::path::{Path, PathBuf};

const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "jfif", "png", "bmp"];

/// One image to play: a path, or a file a client opened for the daemon.
#[derive(Debug, Clone)]
enum Image {
    Path(PathBuf),
    Open(ReceivedPhoto),
}

/// Plays image files as successive frames, then ends.
#[derive(Debug)]
pub struct FileSource {
    root: PathBuf,
    files: Vec<Image>,
    next: usize,
    limits: DecodeLimits,
}

impl FileSource {
    pub fn open(path: &Path, limits: DecodeLimits) -> Result<Self, SourceError> {
        let what = path.display().to_string();
        let meta = stat(path, &what)?;
        if !meta.is_dir() && !meta.is_file() {
            return Err(SourceError::NotAFile { what });
        }
        let files = if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| io_error(&what, &e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
                })
                .collect();
            files.sort();
            files.into_iter().map(Image::Path).collect()
        } else {
            vec![Image::Path(path.to_path_buf())]
        };
        if files.is_empty() {
            return Err(SourceError::Empty { what });
        }
        Ok(Self {
            root: path.to_path_buf(),
            files,
            next: 0,
            limits,
        })
    }

    /// Plays the one photo a client passed with its request.
    pub fn received(photo: &ReceivedPhoto, limits: DecodeLimits) -> Self {
        Self {
            root: PathBuf::from(&photo.name),
            files: vec![Image::Open(photo.clone())],
            next: 0,
            limits,
        }
    }

    /// Number of images the source will play.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

fn io_error(what: &str, e: &std::io::Error) -> SourceError {
    match e.kind() {
        std::io::ErrorKind::NotFound => SourceError::NotFound { what: what.into() },
        std::io::ErrorKind::PermissionDenied => SourceError::PermissionDenied { what: what.into() },
        _ => SourceError::Read {
            what: what.into(),
            why: e.to_string(),
        },
    }
}

/// The metadata of a photo or directory; a missing one is `FileNotFound`
/// (a photo, not a camera, is what is missing).
fn stat(path: &Path, what: &str) -> Result<std::fs::Metadata, SourceError> {
    std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SourceError::FileNotFound { what: what.into() },
        _ => io_error(what, &e),
    })
}

/// Reads at most `max + 1` bytes, so an oversized file is detected without reading it all.
pub fn read_capped(path: &Path, max: usize) -> Result<Vec<u8>, SourceError> {
    let what = path.display().to_string();
    let meta = stat(path, &what)?;
    if !meta.is_file() {
        return Err(SourceError::NotAFile { what });
    }
    // O_NONBLOCK: a FIFO swapped in since the check does not block the open.
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(path)
            .map_err(|e| io_error(&what, &e))?
    };
    read_open_capped(&file, &what, max)
}

/// Reads at most `max + 1` bytes of an open file from its start; anything
/// but a regular file (a FIFO, a socket, a device) is `NotAFile`.
fn read_open_capped(file: &std::fs::File, what: &str, max: usize) -> Result<Vec<u8>, SourceError> {
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(SourceError::NotAFile { what: what.into() });
    }
    let mut bytes = Vec::new();
    let mut offset = 0u64;
    let mut chunk = vec![0u8; 64 * 1024];
    use std::os::unix::fs::FileExt;
    while bytes.len() <= max {
        let n = file
            .read_at(&mut chunk, offset)
            .map_err(|e| io_error(what, &e))?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
        offset += n as u64;
    }
    Ok(bytes)
}

impl FrameSource for FileSource {
    fn describe(&self) -> String {
        if self.files.len() == 1 {
            format!("file:{}", self.root.display())
        } else {
            format!("file:{} ({} images)", self.root.display(), self.files.len())
        }
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let Some(image) = self.files.get(self.next).cloned() else {
            return Ok(None);
        };
        let index = self.next as u32;
        self.next += 1;
        let max = self.limits.max_input_bytes;
        let (bytes, what) = match &image {
            Image::Path(path) => (read_capped(path, max)?, path.display().to_string()),
            Image::Open(photo) => (
                read_open_capped(&photo.file, &photo.name, max)?,
                photo.name.clone(),
            ),
        };
        let image = decode_untrusted(&bytes, &self.limits).map_err(|why| SourceError::Decode {
            what: what.clone(),
            why,
        })?;
        Ok(Some(Frame {
            image,
            index,
            origin: what,
        }))
    }
}

//! The daemon's side of the control socket: binding it (or taking it from
//! systemd), checking peers, admitting a bounded number of clients, and
//! reading one request per connection with a deadline. What a request does
//! is the daemon's business: the server hands it over through a [`Submit`]
//! and streams back what it is given.

use super::protocol::{peer_allowed, read_request, ReadError, Reply, Request};
use crate::clock::Stop;
use crate::config::Config;
use crate::model::ErrorCode;
use std::io::{BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::time::Duration;

/// Hands a request (with the photo file that came with it, if any) to the
/// daemon with the channel its replies go to; false when the daemon cannot
/// take it now (the client is told `busy`).
pub type Submit =
    Arc<dyn Fn(Request, Option<std::fs::File>, SyncSender<Reply>) -> bool + Send + Sync>;

/// A client's stream that keeps the first file descriptor passed with the
/// request (`SCM_RIGHTS`); any others are closed by the kernel (no room is
/// given for them) or here.
struct PeerStream {
    stream: UnixStream,
    photo: Option<std::os::fd::OwnedFd>,
}

impl std::io::Read for PeerStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = recvmsg(
            &self.stream,
            &mut [std::io::IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                for fd in fds {
                    if self.photo.is_none() {
                        self.photo = Some(fd);
                    }
                }
            }
        }
        Ok(got.bytes)
    }
}

/// The control socket this daemon bound (not one systemd passed in), so
/// that shutdown removes that socket and never a file put in its place.
pub struct BoundSocket {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl BoundSocket {
    /// Removes the socket if the path still names the one bound at start.
    pub fn remove(&self) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds the control socket, or takes it from systemd (`LISTEN_FDS`).
/// Only a stale socket is removed: any other file at the path (a config,
/// a key, a directory) is an error and is left as it is.
pub fn bind_socket(path: &Path) -> std::io::Result<(UnixListener, Option<BoundSocket>)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if let Some(listener) = crate::control::activation::listener_from_systemd()? {
        return Ok((listener, None));
    }
    crate::config::check_socket_path(path)
        .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidInput, why))?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{}: another enrolld is running", path.display()),
                ));
            }
            // A socket nobody listens on: left by a daemon that was killed.
            std::fs::remove_file(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        }
        Ok(meta) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                not_a_socket(path, &meta.file_type()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            ))
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let meta = std::fs::symlink_metadata(path)?;
    Ok((
        listener,
        Some(BoundSocket {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        }),
    ))
}

pub fn control_worker(
    listener: &UnixListener,
    config: &Config,
    submit: &Submit,
    stop: &Stop,
    active: &Arc<Clients>,
) {
    // A blocking accept: a connection is served at once and an idle daemon
    // does not poll. At shutdown this thread may stay blocked here; the
    // daemon does not wait for it, and the process ends.
    if let Err(e) = listener.set_nonblocking(false) {
        log::error!("control socket: {e}");
        return;
    }
    let waiting = Arc::new(Waiting::default());
    let own_uid = rustix::process::getuid().as_raw();
    let max = config.control.max_clients as usize;
    while !stop.is_set() {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors or memory: give the system a moment.
                log::warn!("control socket: {e}");
                if stop.wait(Duration::from_millis(100)) {
                    break;
                }
                continue;
            }
        };
        if stop.is_set() {
            refuse(
                stream,
                Reply::error(ErrorCode::Stopping, "enrolld is stopping"),
            );
            break;
        }
        let peer_uid = match rustix::net::sockopt::socket_peercred(&stream) {
            Ok(cred)
                if peer_allowed(
                    cred.uid.as_raw(),
                    cred.gid.as_raw(),
                    own_uid,
                    &config.control.allowed_uids,
                    &config.control.allowed_gids,
                ) =>
            {
                cred.uid.as_raw()
            }
            Ok(cred) => {
                log::warn!(
                    "control socket: refused uid {} gid {} (pid {})",
                    cred.uid.as_raw(),
                    cred.gid.as_raw(),
                    cred.pid.as_raw_nonzero()
                );
                refuse(
                    stream,
                    Reply::error(
                        ErrorCode::Forbidden,
                        "this user may not use enrolld's control socket",
                    ),
                );
                continue;
            }
            Err(e) => {
                log::warn!("control socket: cannot read peer credentials: {e}");
                continue;
            }
        };
        // A client holds a slot only once it has asked something: the
        // oldest of those still silent makes room for a new one.
        let Some(ticket) = waiting.admit(&stream, max) else {
            continue;
        };
        let (submit, active, waiting, timeout) = (
            submit.clone(),
            active.clone(),
            waiting.clone(),
            Duration::from_millis(config.control.read_timeout_ms),
        );
        let spawned = std::thread::Builder::new()
            .name("client".into())
            .spawn(move || {
                serve_client(stream, peer_uid, &*submit, timeout, |req| {
                    waiting.leave(ticket);
                    // Requests that wait on the cloud (drain, an enrollment
                    // followed to its upload) leave two slots free, so that
                    // status and the queue commands still get in.
                    let long = matches!(
                        req,
                        Request::Drain {}
                            | Request::Enroll {
                                follow_upload: true,
                                ..
                            }
                    );
                    let limit = if long { max.saturating_sub(2).max(1) } else { max };
                    let Some(slot) = active.take(limit) else {
                        let advice = if long {
                            format!(
                                "{limit} requests are already waiting on the cloud (at most {max} clients, \
                                 2 kept for status and the queue); try again when one ends"
                            )
                        } else {
                            format!("at most {max} clients at once (control.max_clients); try again")
                        };
                        return Err(Reply::error(ErrorCode::TooManyClients, advice));
                    };
                    Ok(slot)
                });
                waiting.leave(ticket);
            });
        if spawned.is_err() {
            log::error!("control socket: cannot start a client thread");
        }
    }
}

/// Connections that have not sent their request line yet, oldest first.
#[derive(Default)]
struct Waiting {
    inner: std::sync::Mutex<(u64, std::collections::VecDeque<(u64, UnixStream)>)>,
}

impl Waiting {
    /// Registers a new connection; when `max` are already waiting, the
    /// oldest is shut down (its read ends, it is answered nothing). `None`
    /// when the connection cannot be registered.
    fn admit(&self, stream: &UnixStream, max: usize) -> Option<u64> {
        let clone = stream.try_clone().ok()?;
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (next, queue) = &mut *guard;
        while queue.len() >= max {
            if let Some((_, oldest)) = queue.pop_front() {
                log::warn!("control socket: a client sent nothing; dropped for a new one");
                let _ = oldest.shutdown(std::net::Shutdown::Both);
            }
        }
        *next += 1;
        queue.push_back((*next, clone));
        Some(*next)
    }

    /// The connection has sent its request, or is gone.
    fn leave(&self, ticket: u64) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.1.retain(|(t, _)| *t != ticket);
    }
}

/// The clients being answered, and a wait for the last one to be done.
#[derive(Debug, Default)]
pub struct Clients {
    count: std::sync::Mutex<usize>,
    idle: std::sync::Condvar,
}

impl Clients {
    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot, if fewer than `limit` clients are being answered.
    fn take(self: &Arc<Self>, limit: usize) -> Option<SlotGuard> {
        let mut count = self.lock();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(SlotGuard(self.clone()))
    }

    /// Waits until no client is being answered, at most `within`; true when
    /// none is left.
    pub fn wait_idle(&self, within: Duration) -> bool {
        let count = self.lock();
        let (count, _) = self
            .idle
            .wait_timeout_while(count, within, |n| *n > 0)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *count == 0
    }
}

/// A client slot, given back when the client is done.
struct SlotGuard(Arc<Clients>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut count = self.0.lock();
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// Answers with one error line and closes, after draining briefly (at most
/// 64 KiB, 50 ms) whatever input is still pending: closing a socket with
/// unread input can reset the connection before the client reads the answer.
fn refuse(mut stream: UnixStream, reply: Reply) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(reply.to_line().as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match std::io::Read::read(&mut stream, &mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

/// Reads one request and streams the answers. `slot` is called once the
/// request is read: it takes a client slot or says why there is none.
fn serve_client(
    stream: UnixStream,
    peer_uid: u32,
    submit: &(dyn Fn(Request, Option<std::fs::File>, SyncSender<Reply>) -> bool + Send + Sync),
    timeout: Duration,
    slot: impl FnOnce(&Request) -> Result<SlotGuard, Reply>,
) {
    if stream.set_read_timeout(Some(timeout)).is_err()
        || stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .is_err()
    {
        return;
    }
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let mut writer = writer;
    let mut reader = BufReader::new(PeerStream {
        stream,
        photo: None,
    });
    let failure = match read_request(&mut reader) {
        Ok(mut req) => 'served: {
            if let Request::Enroll { peer_uid: uid, .. } = &mut req {
                *uid = Some(peer_uid);
            }
            let _slot = match slot(&req) {
                Ok(guard) => guard,
                Err(reply) => break 'served reply,
            };
            // A descriptor is taken only with a request that says it sends one.
            let photo = reader.get_mut().photo.take().map(std::fs::File::from);
            let photo = match (&req, photo) {
                (Request::Enroll { photo: Some(_), .. }, Some(file)) => Some(file),
                (Request::Enroll { photo: Some(_), .. }, None) => {
                    break 'served Reply::error(
                        ErrorCode::Malformed,
                        "the request names a photo but no file descriptor came with it",
                    )
                }
                _ => None,
            };
            let (tx, rx) = mpsc::sync_channel::<Reply>(64);
            if submit(req, photo, tx) {
                while let Ok(reply) = rx.recv() {
                    let last = reply.is_last();
                    if writer.write_all(reply.to_line().as_bytes()).is_err() || last {
                        return;
                    }
                }
                return;
            }
            Reply::error(ErrorCode::Busy, "the daemon is busy; try again")
        }
        Err(ReadError::Closed) => return,
        Err(ReadError::TooLong) => Reply::error(
            ErrorCode::TooLong,
            format!("requests are at most {} bytes", super::MAX_LINE_BYTES),
        ),
        Err(ReadError::Timeout) => Reply::error(ErrorCode::Timeout, "no request line in time"),
        Err(ReadError::Malformed(why)) => Reply::error(ErrorCode::Malformed, why),
    };
    refuse(writer, failure);
}

/// What is at the control socket's path: nothing or a socket is fine;
/// enrolld never replaces any other file.
pub fn check_socket_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => Err(not_a_socket(path, &m.file_type())),
        _ => Ok(()),
    }
}

/// Why enrolld does not bind at `path`, where a file of type `t` is.
pub fn not_a_socket(path: &Path, t: &std::fs::FileType) -> String {
    format!(
        "{} exists and is not a socket ({}); enrolld removes only a stale socket: \
         set control.socket to another path or move the file away",
        path.display(),
        file_kind(t)
    )
}

/// What a file is, for messages.
fn file_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "a regular file"
    }
}

//! The client side of the control socket: `enrolld` commands talk to a
//! running daemon through it.

use super::protocol::{Reply, Request};
use std::io::{BufRead, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A client connection to the daemon.
pub struct Client {
    stream: std::io::BufReader<UnixStream>,
    /// The wait for each line after the first.
    each: Duration,
    /// The wait for the first line; `None`: as for every line.
    first: Option<Duration>,
}

impl Client {
    /// Connects; `Ok(None)` when no daemon listens there.
    pub fn connect(path: &Path, timeout: Duration) -> std::io::Result<Option<Client>> {
        match UnixStream::connect(path) {
            Ok(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Ok(Some(Client {
                    stream: std::io::BufReader::new(s),
                    each: timeout,
                    first: None,
                }))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends a request and calls `on_reply` for every line until the last.
    /// The daemon's first line must come within `first`: a daemon that is
    /// stopped (SIGSTOP) or hung still has its socket accept connections,
    /// and would otherwise be waited for as long as a whole answer may take.
    pub fn first_line_within(mut self, first: Duration) -> Self {
        self.first = Some(first);
        self
    }

    pub fn call(
        &mut self,
        req: &Request,
        on_reply: &mut dyn FnMut(&Reply),
    ) -> std::io::Result<Reply> {
        self.call_with(req, None, on_reply)
    }

    /// Like [`Client::call`], passing `photo`'s descriptor with the request
    /// (for `enroll` with `photo` set): the daemon reads the file the
    /// client opened.
    pub fn call_with(
        &mut self,
        req: &Request,
        photo: Option<&std::fs::File>,
        on_reply: &mut dyn FnMut(&Reply),
    ) -> std::io::Result<Reply> {
        let mut line = serde_json::to_string(req).map_err(std::io::Error::other)?;
        line.push('\n');
        match photo {
            None => self.stream.get_mut().write_all(line.as_bytes())?,
            Some(file) => send_with_fd(self.stream.get_ref(), line.as_bytes(), file)?,
        }
        let mut wait = self.first.unwrap_or(self.each);
        loop {
            self.stream.get_ref().set_read_timeout(Some(wait))?;
            let mut text = String::new();
            let read = self.stream.read_line(&mut text).map_err(|e| {
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "accepted the connection but sent nothing for {} s: the daemon may be \
                             stopped or hung (systemctl status enrolld; journalctl -u enrolld)",
                            wait.as_secs()
                        ),
                    )
                } else {
                    e
                }
            })?;
            wait = self.each;
            if read == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the daemon closed the connection",
                ));
            }
            let reply = Reply::from_line(text.trim(), req).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the daemon's reply cannot be read: {e}"),
                )
            })?;
            on_reply(&reply);
            if reply.is_last() {
                return Ok(reply);
            }
        }
    }
}

/// Writes `bytes` with `file`'s descriptor attached to the first chunk.
fn send_with_fd(stream: &UnixStream, bytes: &[u8], file: &std::fs::File) -> std::io::Result<()> {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::os::fd::AsFd;
    let fds = [file.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("no room for the descriptor"));
    }
    let sent = sendmsg(
        stream,
        &[std::io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    let mut stream = stream;
    stream.write_all(&bytes[sent..])
}

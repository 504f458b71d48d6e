//! systemd socket activation: adopt the listening socket systemd passes as
//! file descriptor 3 (`LISTEN_FDS`, `LISTEN_PID`). The one place enrolld uses
//! `unsafe`: turning an inherited descriptor number into an owned listener.

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixListener;

/// First inherited descriptor (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// The socket systemd passed, if it passed one to this process.
pub fn listener_from_systemd() -> std::io::Result<Option<UnixListener>> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    // Not for children: whatever happens, these variables are consumed here.
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    if !for_us || count < 1 {
        return Ok(None);
    }
    if count > 1 {
        log::warn!("systemd passed {count} sockets; using the first");
    }
    // Check it is a listening Unix stream socket before adopting it.
    // SAFETY: systemd guarantees descriptors LISTEN_FDS_START..+LISTEN_FDS
    // are open and belong to this process (LISTEN_PID matched). Nothing else
    // in enrolld owns descriptor 3: this runs once, before any thread starts
    // using inherited descriptors, and the variables are removed above so it
    // cannot run twice.
    #[allow(unsafe_code)]
    let listener = unsafe { UnixListener::from_raw_fd(LISTEN_FDS_START) };
    listener.local_addr()?;
    listener.set_nonblocking(false)?;
    Ok(Some(listener))
}

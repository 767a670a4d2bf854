//! Socket options and process limits that std and tokio do not expose. The only
//! `unsafe` in Ferrocast lives here, each call a single `setsockopt`, `listen` or
//! `getrlimit` on a borrowed, open socket or a local struct.

use std::io;
use std::os::fd::AsRawFd;

/// Sets `SO_RCVLOWAT`: the kernel reports the socket readable only once `bytes` are
/// queued (or the peer closed, or an error is pending). An ingest connection uses it to
/// take a publisher's steady stream in fewer, larger reads: each wake-up and `recv`
/// costs more CPU than the bytes it moves (socket(7)).
pub fn set_recv_lowat(sock: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes.max(1)).unwrap_or(libc::c_int::MAX);
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4);
    #[allow(unsafe_code)]
    // SAFETY: the descriptor is open for the whole call (borrowed from `sock`), and the
    // option value points at a live `c_int` whose exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&value).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Calls `listen(2)` again on a listening socket with a new `backlog`: Linux (and the
/// BSDs) then resize the accept queue in place, so a listener bound with tokio's
/// default of 1024 gets the configured size without rebinding. The kernel caps it at
/// `net.core.somaxconn` (4096 by default since Linux 5.4).
pub fn set_listen_backlog(sock: &impl AsRawFd, backlog: u32) -> io::Result<()> {
    let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
    #[allow(unsafe_code)]
    // SAFETY: the descriptor is open for the whole call (borrowed from `sock`).
    let rc = unsafe { libc::listen(sock.as_raw_fd(), backlog) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The process's soft limit on open descriptors (`RLIMIT_NOFILE`); `None` when it
/// cannot be read or is unlimited.
pub fn descriptor_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: `lim` is a live, writable rlimit for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) };
    (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Raises the soft descriptor limit to the hard one (at most 2^20, Linux's default
/// `fs.nr_open`), as Go programs do at start: the soft limit is often 1,024 for
/// compatibility with `select(2)`, which a node never uses, and the connection cap is
/// derived from it. The limit in force afterwards; `None` if it cannot be read.
pub fn raise_descriptor_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: `lim` is a live, writable rlimit for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) };
    if rc != 0 {
        return None;
    }
    let target = lim.rlim_max.min(1 << 20);
    if lim.rlim_cur < target {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        #[allow(unsafe_code)]
        // SAFETY: `raised` is a live rlimit for the duration of the call.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) };
        if rc != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "cannot raise RLIMIT_NOFILE");
        }
    }
    descriptor_limit()
}

/// Descriptors kept out of the HTTP connection cap for everything else a node opens:
/// upstream QUIC and gRPC sockets, RTMP publishers, state files, the webhook client.
/// A quarter of the limit, at least 256.
pub fn reserved_descriptors(limit: u64) -> u64 {
    (limit / 4).max(256)
}

/// The default HTTP connection cap: the descriptor limit less
/// [`reserved_descriptors`] (at least 16), so a flood of connections is refused by the
/// server, not by `accept` failing with `EMFILE` for everyone, upstream sockets
/// included. 50,000 when the limit is unknown or unlimited.
pub fn default_max_connections() -> usize {
    match descriptor_limit() {
        Some(limit) => {
            let cap = limit.saturating_sub(reserved_descriptors(limit)).max(16);
            usize::try_from(cap).unwrap_or(usize::MAX)
        }
        None => 50_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_stays_below_the_descriptor_limit() {
        let limit = descriptor_limit().expect("RLIMIT_NOFILE");
        let cap = default_max_connections() as u64;
        assert!(cap < limit || cap == 16, "cap {cap}, limit {limit}");
        assert_eq!(reserved_descriptors(1032), 258);
        assert_eq!(reserved_descriptors(100), 256);
    }

    #[test]
    fn raising_the_descriptor_limit_never_lowers_it() {
        let before = descriptor_limit().expect("RLIMIT_NOFILE");
        let after = raise_descriptor_limit().expect("RLIMIT_NOFILE");
        assert!(after >= before, "{before} -> {after}");
    }

    #[test]
    fn the_backlog_of_a_listening_socket_can_be_resized() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        set_listen_backlog(&listener, 4096).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let _c = TcpStream::connect(addr).expect("still listening");
    }
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    #[test]
    fn reads_wait_for_the_low_water_mark() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        set_recv_lowat(&server, 8).expect("setsockopt");
        server.set_nonblocking(true).expect("nonblocking");
        client.write_all(b"1234").expect("write");
        std::thread::sleep(Duration::from_millis(50));
        // Below the mark the socket is not readable for poll/epoll; a read still returns
        // what is there, so check readiness the way the runtime does.
        let mut fds = [libc_pollfd(&server)];
        assert_eq!(poll(&mut fds), 0, "4 bytes are below the mark of 8");
        client.write_all(b"5678").expect("write");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(poll(&mut fds), 1, "8 bytes reach the mark");
        let mut buf = [0u8; 16];
        assert_eq!((&server).read(&mut buf).expect("read"), 8);
    }

    fn libc_pollfd(s: &TcpStream) -> libc::pollfd {
        libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }
    }

    fn poll(fds: &mut [libc::pollfd]) -> i32 {
        #[allow(unsafe_code)]
        // SAFETY: `fds` is a valid slice of pollfd for the duration of the call.
        unsafe {
            libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0)
        }
    }
}

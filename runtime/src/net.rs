//! Socket options that std and tokio do not expose. The only `unsafe` in Ferrocast
//! lives here, each call a single `setsockopt` on a borrowed, open socket.

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

#[cfg(test)]
mod tests {
    use super::*;
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

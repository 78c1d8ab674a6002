//! The worker's UDP socket: opened with large buffers, sends batched with `sendmmsg(2)` so one
//! system call carries many datagrams.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket;

/// Opens a non-blocking UDP socket on `addr` with the requested buffer sizes (the kernel may
/// clamp them). Returned as a std socket so it can be bound (and fail) before the worker's
/// runtime exists; the worker registers it with `UdpSocket::from_std`.
pub fn bind(
    addr: SocketAddr,
    recv_buffer: usize,
    send_buffer: usize,
) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.set_recv_buffer_size(recv_buffer).ok();
    socket.set_send_buffer_size(send_buffer).ok();
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    Ok(socket.into())
}

/// Most datagrams one `sendmmsg` call carries.
const BATCH: usize = 64;

/// Datagrams waiting to be sent, flushed in batches. Buffers are reused between flushes.
pub struct SendQueue {
    pending: Vec<(SocketAddr, BytesMut)>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

/// What one flush did, for counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlushStats {
    pub datagrams: usize,
    pub bytes: usize,
    pub syscalls: usize,
    pub errors: usize,
}

impl Default for SendQueue {
    fn default() -> Self {
        Self {
            pending: Vec::with_capacity(BATCH * 4),
            addrs: Vec::with_capacity(BATCH),
            iovecs: Vec::with_capacity(BATCH),
            headers: Vec::with_capacity(BATCH),
        }
    }
}

impl SendQueue {
    pub fn push(&mut self, to: SocketAddr, datagram: BytesMut) {
        self.pending.push((to, datagram));
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Moves everything queued into `out` instead of sending it (a simulated network).
    pub fn take_into(&mut self, out: &mut Vec<(SocketAddr, BytesMut)>) {
        out.append(&mut self.pending);
    }

    /// Sends everything queued. A full socket buffer waits for writability (the kernel drains
    /// it in microseconds); other errors drop that datagram and are counted.
    pub async fn flush(&mut self, socket: &UdpSocket) -> FlushStats {
        let mut stats = FlushStats::default();
        let mut start = 0;
        while start < self.pending.len() {
            let end = (start + BATCH).min(self.pending.len());
            match self.send_batch(socket, start, end) {
                Ok(sent) => {
                    stats.syscalls += 1;
                    for (_, d) in &self.pending[start..start + sent] {
                        stats.bytes += d.len();
                    }
                    stats.datagrams += sent;
                    start += sent.max(1).min(end - start);
                    if sent == 0 {
                        stats.errors += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if socket.writable().await.is_err() {
                        stats.errors += self.pending.len() - start;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // The first datagram of the batch failed (e.g. unreachable address): drop it.
                    tracing::trace!(error = %e, to = %self.pending[start].0, "udp send failed");
                    stats.errors += 1;
                    start += 1;
                }
            }
        }
        self.pending.clear();
        stats
    }

    fn send_batch(&mut self, socket: &UdpSocket, start: usize, end: usize) -> io::Result<usize> {
        let batch = &self.pending[start..end];
        self.addrs.clear();
        self.iovecs.clear();
        self.headers.clear();
        for (to, data) in batch {
            let (storage, _) = sockaddr_of(*to);
            self.addrs.push(storage);
            self.iovecs.push(libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            });
        }
        for (i, (to, _)) in batch.iter().enumerate() {
            let (_, len) = sockaddr_of(*to);
            // SAFETY: mmsghdr is plain old data; zeroed is a valid "empty" value.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
            header.msg_hdr.msg_namelen = len;
            header.msg_hdr.msg_iov = &mut self.iovecs[i] as *mut libc::iovec;
            header.msg_hdr.msg_iovlen = 1;
            self.headers.push(header);
        }
        let fd = socket.as_raw_fd();
        let headers = &mut self.headers;
        socket.try_io(tokio::io::Interest::WRITABLE, || {
            // SAFETY: every header points into `addrs`/`iovecs`/`pending`, all alive and
            // unmoved for the duration of the call.
            let n = unsafe {
                libc::sendmmsg(fd, headers.as_mut_ptr(), headers.len() as libc::c_uint, 0)
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })
    }
}

fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let sa = SockAddr::from(addr);
    // SAFETY: SockAddr holds a valid sockaddr of `len` bytes inside a sockaddr_storage.
    let storage = unsafe { *(sa.as_ptr() as *const libc::sockaddr_storage) };
    (storage, sa.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batch_reaches_the_peer_in_order() {
        let a =
            UdpSocket::from_std(bind("127.0.0.1:0".parse().unwrap(), 1 << 20, 1 << 20).unwrap())
                .unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = b.local_addr().unwrap();
        let mut q = SendQueue::default();
        for i in 0..150u8 {
            q.push(to, BytesMut::from(&[i; 100][..]));
        }
        let stats = q.flush(&a).await;
        assert_eq!(stats.datagrams, 150);
        assert!(stats.syscalls >= 3);
        let mut buf = [0u8; 200];
        for i in 0..150u8 {
            let n = b.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &[i; 100][..]);
        }
    }
}

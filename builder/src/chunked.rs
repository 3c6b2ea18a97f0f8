//! A `Write` that hands what is written on in chunks: the layer tar to its
//! compressor thread, exported archives to gRPC `Chunk` messages.

use std::io::Write;

/// Buffers writes and passes each `size` bytes (or more: a write is never
/// split) to `send`; [`Write::flush`] sends what is left. The last chunk is
/// only sent by an explicit flush (dropping the writer does not send it).
pub struct ChunkedWriter<F> {
    size: usize,
    buf: Vec<u8>,
    send: F,
}

impl<F: FnMut(Vec<u8>) -> std::io::Result<()>> ChunkedWriter<F> {
    /// A writer sending chunks of at least `size` bytes to `send`.
    pub fn new(size: usize, send: F) -> Self {
        ChunkedWriter {
            size,
            buf: Vec::with_capacity(size),
            send,
        }
    }
}

impl<F: FnMut(Vec<u8>) -> std::io::Result<()>> Write for ChunkedWriter<F> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.size {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(self.size));
            (self.send)(chunk)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_of_at_least_size_then_the_rest_on_flush() {
        let mut got = Vec::new();
        {
            let mut w = ChunkedWriter::new(4, |c| {
                got.push(c);
                Ok(())
            });
            w.write_all(b"ab").unwrap();
            w.write_all(b"cdef").unwrap();
            w.write_all(b"g").unwrap();
            w.flush().unwrap();
            w.flush().unwrap();
        }
        assert_eq!(got, [b"abcdef".to_vec(), b"g".to_vec()]);
    }
}

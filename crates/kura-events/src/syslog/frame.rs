//! RFC 5425 octet-counting framing: `MSG-LEN SP SYSLOG-MSG`, where MSG-LEN
//! is a decimal count of octets without leading zeros.
//!
//! Octet counting is the only framing RFC 5425 allows over TLS. Newline
//! ("non-transparent", RFC 6587) framing is refused because a newline inside
//! a message would let a sender split it into two forged ones.

use super::SyslogError;

/// A frame whose announced length is above this is not skipped but ends the
/// stream: no honest sender announces 16 MiB for one log line, and skipping
/// would mean reading that much on a length field's say-so.
pub const MAX_SKIPPABLE_FRAME: usize = 16 * 1024 * 1024;

/// The longest MSG-LEN field read (enough for [`MAX_SKIPPABLE_FRAME`]).
const MAX_LEN_DIGITS: usize = 8;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message (the SYSLOG-MSG octets).
    Message(Vec<u8>),
    /// A frame longer than the decoder's limit; its octets are being
    /// discarded as they arrive and will never be buffered.
    Oversized {
        /// The announced length.
        len: usize,
    },
}

/// Splits a byte stream into octet-counted frames, buffering at most one
/// frame of the configured maximum size (plus whatever the last read added).
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame: usize,
    buf: Vec<u8>,
    /// Octets of an oversized frame still to discard.
    skipping: usize,
}

impl FrameDecoder {
    /// A decoder that accepts frames of up to `max_frame` octets.
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            buf: Vec::new(),
            skipping: 0,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, mut data: &[u8]) {
        if self.skipping > 0 {
            let n = self.skipping.min(data.len());
            self.skipping -= n;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
    }

    /// How many octets are buffered but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether the stream ended cleanly: nothing buffered, nothing to skip.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && self.skipping == 0
    }

    /// The next complete frame, `None` if more bytes are needed, or an error
    /// when the stream is not octet-counted (after which the connection
    /// cannot be resynchronised and must be closed).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SyslogError> {
        let digits = self
            .buf
            .iter()
            .take(MAX_LEN_DIGITS + 1)
            .take_while(|b| b.is_ascii_digit())
            .count();
        match self.buf.first() {
            None => return Ok(None),
            Some(b'<') => {
                return Err(SyslogError::Framing(
                    "the stream starts a message with `<` instead of its length".into(),
                ));
            }
            Some(b'0') => {
                return Err(SyslogError::Framing(
                    "MSG-LEN must not be zero or start with 0".into(),
                ));
            }
            Some(b) if !b.is_ascii_digit() => {
                return Err(SyslogError::Framing(format!(
                    "expected a decimal MSG-LEN, found byte {b:#04x}"
                )));
            }
            Some(_) => {}
        }
        if digits > MAX_LEN_DIGITS {
            return Err(SyslogError::Framing(format!(
                "MSG-LEN has more than {MAX_LEN_DIGITS} digits"
            )));
        }
        let Some(&after) = self.buf.get(digits) else {
            return Ok(None);
        };
        if after != b' ' {
            return Err(SyslogError::Framing(format!(
                "MSG-LEN must be followed by one space, found byte {after:#04x}"
            )));
        }
        let len: usize = std::str::from_utf8(&self.buf[..digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| SyslogError::Framing("unreadable MSG-LEN".into()))?;
        let header = digits + 1;
        if len > self.max_frame {
            if len > MAX_SKIPPABLE_FRAME {
                return Err(SyslogError::Framing(format!(
                    "MSG-LEN {len} is implausible (more than {MAX_SKIPPABLE_FRAME})"
                )));
            }
            let available = self.buf.len() - header;
            let discard = available.min(len);
            self.buf.drain(..header + discard);
            self.skipping = len - discard;
            return Ok(Some(Frame::Oversized { len }));
        }
        if self.buf.len() < header + len {
            return Ok(None);
        }
        let message = self.buf[header..header + len].to_vec();
        self.buf.drain(..header + len);
        Ok(Some(Frame::Message(message)))
    }
}

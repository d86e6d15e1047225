//! WebSocket frames (RFC 6455 section 5): encoding with or without a mask, and strict reading
//! that refuses reserved bits, unknown opcodes, bad control frames, masking in the wrong
//! direction and payloads over the limit before reading them.

use std::io::Read;

/// Opcode: a continuation of a fragmented message (section 5.4).
pub const OP_CONTINUATION: u8 = 0x0;
/// Opcode: a text message (UTF-8); USP does not use it.
pub const OP_TEXT: u8 = 0x1;
/// Opcode: a binary message; USP sends one Record per message.
pub const OP_BINARY: u8 = 0x2;
/// Opcode: Close (section 5.5.1).
pub const OP_CLOSE: u8 = 0x8;
/// Opcode: Ping (section 5.5.2); answered with a Pong carrying the same payload.
pub const OP_PING: u8 = 0x9;
/// Opcode: Pong (section 5.5.3).
pub const OP_PONG: u8 = 0xA;

// Close status codes (section 7.4.1).
/// 1000 Normal Closure: the purpose of the connection is fulfilled.
pub const CLOSE_NORMAL: u16 = 1000;
/// 1001 Going Away: the endpoint shuts down (or a browser leaves the page).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// 1002 Protocol error: the peer broke RFC 6455.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// 1003 Unsupported Data: a data type the endpoint does not accept (USP: text messages).
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
/// 1007 Invalid frame payload data: a payload inconsistent with its type (bad UTF-8).
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// 1009 Message Too Big: a message larger than the endpoint accepts.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Control frames carry at most this much (section 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// One frame as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN: the last frame of its message.
    pub fin: bool,
    /// One of the `OP_*` opcodes.
    pub opcode: u8,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

/// Why a frame was refused, with the close code to send the peer.
#[derive(Debug)]
pub enum FrameError {
    /// The connection failed or ended while reading.
    Io(std::io::Error),
    /// Breaks RFC 6455: close with `code`.
    Protocol {
        /// The close status code to send (`CLOSE_*`).
        code: u16,
        /// What was wrong, for logs and the close reason.
        why: String,
    },
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e)
    }
}

fn protocol<T>(code: u16, why: impl Into<String>) -> Result<T, FrameError> {
    Err(FrameError::Protocol {
        code,
        why: why.into(),
    })
}

/// Encodes one frame; `mask` is the client's masking key (clients must mask, servers must
/// not, section 5.1).
pub fn encode(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Reads one frame. `expect_masked`: we are the server (client frames must be masked) or the
/// client (server frames must not be). `room` is how many payload bytes the message being
/// assembled may still take; a data frame beyond it is refused with 1009 before its payload
/// is read.
pub fn read<R: Read>(r: &mut R, expect_masked: bool, room: usize) -> Result<Frame, FrameError> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head)?;
    let fin = head[0] & 0x80 != 0;
    if head[0] & 0x70 != 0 {
        return protocol(
            CLOSE_PROTOCOL_ERROR,
            "reserved bits set (no extension was agreed)",
        );
    }
    let opcode = head[0] & 0x0F;
    let is_control = opcode & 0x08 != 0;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
        other => return protocol(CLOSE_PROTOCOL_ERROR, format!("unknown opcode 0x{other:X}")),
    }
    let masked = head[1] & 0x80 != 0;
    if masked != expect_masked {
        return protocol(
            CLOSE_PROTOCOL_ERROR,
            if expect_masked {
                "unmasked frame from a client"
            } else {
                "masked frame from a server"
            },
        );
    }
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            u16::from_be_bytes(b) as u64
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            let n = u64::from_be_bytes(b);
            if n >> 63 != 0 {
                return protocol(CLOSE_PROTOCOL_ERROR, "64-bit length with the top bit set");
            }
            n
        }
        n => n as u64,
    };
    if is_control {
        if !fin {
            return protocol(CLOSE_PROTOCOL_ERROR, "fragmented control frame");
        }
        if len > MAX_CONTROL_PAYLOAD as u64 {
            return protocol(
                CLOSE_PROTOCOL_ERROR,
                format!("control frame of {len} bytes"),
            );
        }
    } else if len > room as u64 {
        return protocol(
            CLOSE_TOO_BIG,
            format!("message would exceed the limit: frame of {len} bytes, {room} bytes left"),
        );
    }
    let mut key = [0u8; 4];
    if masked {
        r.read_exact(&mut key)?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Ok(Frame {
        fin,
        opcode,
        payload,
    })
}

/// Parses a close frame's payload: nothing, or a code and a UTF-8 reason (section 5.5.1).
pub fn parse_close(payload: &[u8]) -> Result<(u16, String), FrameError> {
    match payload.len() {
        0 => Ok((1005, String::new())), // 1005: no status received
        1 => protocol(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload"),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            // Codes a peer may send (7.4.1, 7.4.2): 1000-1003, 1007-1011, 3000-4999.
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return protocol(CLOSE_PROTOCOL_ERROR, format!("close code {code}"));
            }
            let reason = std::str::from_utf8(&payload[2..])
                .or_else(|_| protocol(CLOSE_INVALID_PAYLOAD, "close reason is not valid UTF-8"))?;
            Ok((code, reason.to_owned()))
        }
    }
}

/// A close frame's payload: code and reason (cut to fit a control frame on a char boundary).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(&reason.as_bytes()[..end]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_examples() {
        // Section 5.7: unmasked "Hello" and masked "Hello".
        let unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(encode(true, OP_TEXT, b"Hello", None), unmasked);
        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            encode(true, OP_TEXT, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d])),
            masked
        );
        let f = read(&mut &masked[..], true, 100).unwrap();
        assert_eq!(
            (f.fin, f.opcode, f.payload.as_slice()),
            (true, OP_TEXT, &b"Hello"[..])
        );
        // A fragmented unmasked text message: "Hel" then "lo".
        let first = [0x01, 0x03, 0x48, 0x65, 0x6c];
        let f = read(&mut &first[..], false, 100).unwrap();
        assert!(!f.fin);
        // 256 bytes binary in a single unmasked frame: 16-bit length.
        let big = encode(true, OP_BINARY, &[0u8; 256], None);
        assert_eq!(&big[..4], &[0x82, 0x7E, 0x01, 0x00]);
        // 64 KiB: 64-bit length.
        let bigger = encode(true, OP_BINARY, &vec![0u8; 65536], None);
        assert_eq!(&bigger[..10], &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(
            read(&mut &bigger[..], false, 65536).unwrap().payload.len(),
            65536
        );
    }

    fn code_of(r: Result<Frame, FrameError>) -> u16 {
        match r {
            Err(FrameError::Protocol { code, .. }) => code,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn bad_frames_are_refused_with_the_right_code() {
        let masked = |b: &[u8]| read(&mut &b[..], true, 1000);
        assert_eq!(code_of(masked(&[0x82, 0x01, 0x00])), 1002); // unmasked from client
        assert_eq!(
            code_of(read(&mut &[0x82, 0x80, 0, 0, 0, 0][..], false, 10)),
            1002
        );
        assert_eq!(code_of(masked(&[0xC2, 0x80, 0, 0, 0, 0])), 1002); // RSV1
        assert_eq!(code_of(masked(&[0x83, 0x80, 0, 0, 0, 0])), 1002); // opcode 3
        assert_eq!(code_of(masked(&[0x09, 0x80, 0, 0, 0, 0])), 1002); // fragmented ping
        assert_eq!(code_of(masked(&[0x89, 0xFE, 0, 126])), 1002); // 126-byte ping
        assert_eq!(code_of(masked(&[0x82, 0xFE, 0x10, 0x00])), 1009); // 4096 > 1000
        let huge = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(code_of(masked(&huge)), 1002);
        let near = [0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(code_of(masked(&near)), 1009); // refused before any allocation
        assert!(matches!(
            masked(&[0x82, 0x85, 1, 2]),
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close(&[]).unwrap().0, 1005);
        assert_eq!(
            parse_close(&close_payload(1000, "bye")).unwrap(),
            (1000, "bye".into())
        );
        assert!(parse_close(&[3]).is_err());
        assert!(parse_close(&[0x03, 0xED]).is_err()); // 1005 must not be sent
        assert!(parse_close(&[0x03, 0xE8, 0xFF]).is_err());
        let long = "é".repeat(100);
        let p = close_payload(1000, &long);
        assert!(p.len() <= MAX_CONTROL_PAYLOAD);
        assert!(parse_close(&p).is_ok());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..50_000 {
            let len = (next() % 24) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = read(&mut &bytes[..], next() % 2 == 0, 64);
            let _ = parse_close(&bytes);
        }
    }
}

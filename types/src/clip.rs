//! Peer text in error messages, kept short; a leaf the other modules import from.

/// Keeps a peer's text short in error messages (80 bytes, cut on a character boundary).
pub fn clip(text: &str) -> String {
    const MAX: usize = 80;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

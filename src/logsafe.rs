//! Peer-supplied text (EAP identity, certificate names) made safe for one log line.
//!
//! A device chooses its identity and the names in its certificate; written raw, a CR/LF in
//! them starts a new log line that a reader (or a log shipper) takes for the server's own,
//! e.g. a forged `outcome="accept"`. [`Escaped`] writes control characters, the Unicode line
//! and paragraph separators and the backslash itself as escapes, so the value stays on its
//! line and the escaping cannot be imitated. Everything else is written as is, so plain
//! names read (and match in tests and scripts) exactly as before.

use std::fmt;

/// Displays a peer-supplied string with control characters escaped (`\n`, `\r`, `\t`,
/// `\\`, else `\u{…}`).
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            let (plain, tail) = rest.split_at(at);
            f.write_str(plain)?;
            let mut chars = tail.chars();
            match chars.next() {
                Some('\n') => f.write_str("\\n")?,
                Some('\r') => f.write_str("\\r")?,
                Some('\t') => f.write_str("\\t")?,
                Some('\\') => f.write_str("\\\\")?,
                Some(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                None => {}
            }
            rest = chars.as_str();
        }
        f.write_str(rest)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\\' | '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_and_control_characters_are_escaped() {
        let forged = "dev\r\nINFO outcome=\"accept\"\t\u{1b}[2J\u{7f}\u{85}\u{2028}end";
        assert_eq!(
            Escaped(forged).to_string(),
            "dev\\r\\nINFO outcome=\"accept\"\\t\\u{1b}[2J\\u{7f}\\u{85}\\u{2028}end"
        );
    }

    #[test]
    fn backslash_is_escaped_so_an_escape_cannot_be_imitated() {
        assert_eq!(Escaped("a\\nb").to_string(), "a\\\\nb");
        assert_ne!(Escaped("a\\nb").to_string(), Escaped("a\nb").to_string());
    }

    #[test]
    fn plain_names_are_unchanged() {
        let name = "CN=anchord issuing CA, O=Exämple";
        assert_eq!(Escaped(name).to_string(), name);
    }
}

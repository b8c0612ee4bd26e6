//! Rules for free text shared by every contract: what counts as blank.

/// True when `text` would show nothing: empty, only whitespace, or only characters that
/// render as nothing (zero-width spaces and joiners, direction marks, word joiners, soft
/// hyphens, variation selectors, Hangul and Braille fillers, tag characters…). A post or
/// title made of those looks empty to every reader, so it is refused like an empty one.
pub fn is_blank(text: &str) -> bool {
    text.chars().all(|c| c.is_whitespace() || is_invisible(c))
}

fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_only_text_is_blank_and_anything_visible_is_not() {
        for blank in [
            "",
            "   ",
            "\u{200B}\u{200B}",
            "\u{FEFF} \u{2060}\u{00AD}",
            "\u{3164}\t\u{2800}",
        ] {
            assert!(is_blank(blank), "{blank:?}");
        }
        for visible in ["a", "\u{200B}a\u{200B}", "👍", "\u{200D}ñ"] {
            assert!(!is_blank(visible), "{visible:?}");
        }
    }
}

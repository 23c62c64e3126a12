//! Token ids of a BERT WordPiece tokenizer without the `tokenizers`
//! crate's per-token bookkeeping, for the static embedding's hot path.
//!
//! `Tokenizer::encode` builds a whole `Encoding` for every sentence (token
//! strings, offsets, alignments of every normalised character, a `String`
//! per candidate sub-word): on 2 cores a third of a static embedding's time
//! went to malloc. A static model needs only the ids, so [`WordPiece`]
//! computes them into reused buffers, with the same steps in the same
//! order as the crate does for the configuration it accepts
//! ([`WordPiece::from_tokenizer`] returns `None` for any other, and the
//! caller keeps using the crate):
//!
//! 1. added tokens (`[CLS]`, `[UNK]`, ...) matched in the raw text,
//!    leftmost-longest, never normalised;
//! 2. `BertNormalizer`: control characters dropped, whitespace to a space,
//!    spaces around CJK ideographs, NFD with non-spacing marks removed,
//!    lower case;
//! 3. `BertPreTokenizer`: split on whitespace, punctuation isolated;
//! 4. `WordPiece`: greedy longest match, `##` continuations, a word longer
//!    than the limit or with no match becomes the unknown token.
//!
//! The character classes come from the crates `tokenizers` itself uses
//! (`unicode_categories`, `unicode-normalization-alignments`), so their
//! tables agree; the tests compare ids with the crate's on every kind of
//! text.

use std::collections::HashMap;

use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::Tokenizer;
use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

/// The ids-only tokenizer of a BERT WordPiece configuration.
#[derive(Debug)]
pub struct WordPiece {
    /// Word-initial pieces.
    initial: HashMap<String, u32>,
    /// Continuation pieces, keyed without their `##` prefix.
    continuation: HashMap<String, u32>,
    unk: u32,
    max_chars: usize,
    /// Added tokens, matched in the raw text.
    added: Vec<(String, u32)>,
}

/// Buffers one thread reuses from sentence to sentence.
#[derive(Debug, Default)]
pub struct Scratch {
    text: String,
    decomposed: String,
}

impl WordPiece {
    /// The ids-only form of `tokenizer`, when its pipeline is exactly the
    /// one this module reproduces (BERT's uncased normaliser and
    /// pre-tokenizer, a WordPiece model, added tokens matched verbatim);
    /// `None` otherwise.
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Option<Self> {
        let Some(NormalizerWrapper::BertNormalizer(n)) = tokenizer.get_normalizer() else {
            return None;
        };
        let strip_accents = n.strip_accents.unwrap_or(n.lowercase);
        if !(n.clean_text && n.handle_chinese_chars && strip_accents && n.lowercase) {
            return None;
        }
        if !matches!(tokenizer.get_pre_tokenizer(), Some(PreTokenizerWrapper::BertPreTokenizer(_))) {
            return None;
        }
        let ModelWrapper::WordPiece(model) = tokenizer.get_model() else {
            return None;
        };
        // Special tokens encoded as plain text are not matched whole.
        if tokenizer.get_encode_special_tokens() {
            return None;
        }
        let mut added = Vec::new();
        for (id, token) in tokenizer.get_added_tokens_decoder() {
            if token.normalized || token.single_word || token.lstrip || token.rstrip || token.content.is_empty() {
                return None;
            }
            added.push((token.content, id));
        }
        // A word's first piece is looked up in the whole vocabulary (so a
        // word spelled `##ing` is the piece `##ing`), every later piece
        // among the prefixed ones, keyed without the prefix.
        let initial = tokenizers::Model::get_vocab(model);
        let prefix = model.continuing_subword_prefix.as_str();
        let continuation = initial
            .iter()
            .filter_map(|(piece, &id)| piece.strip_prefix(prefix).map(|rest| (rest.to_string(), id)))
            .collect();
        let unk = *initial.get(&model.unk_token)?;
        Some(Self { initial, continuation, unk, max_chars: model.max_input_chars_per_word, added })
    }

    /// Appends the ids of `text` (no special tokens added) to `ids`.
    pub fn ids(&self, text: &str, scratch: &mut Scratch, ids: &mut Vec<u32>) {
        let mut rest = text;
        while let Some((start, len, id)) = self.next_added(rest) {
            self.plain_ids(&rest[..start], scratch, ids);
            ids.push(id);
            rest = &rest[start + len..];
        }
        self.plain_ids(rest, scratch, ids);
    }

    /// The leftmost added token in `text`, the longest of those starting
    /// there: (byte offset, byte length, id).
    fn next_added(&self, text: &str) -> Option<(usize, usize, u32)> {
        self.added
            .iter()
            .filter_map(|(content, id)| text.find(content.as_str()).map(|start| (start, content.len(), *id)))
            .min_by_key(|&(start, len, _)| (start, std::cmp::Reverse(len)))
    }

    /// Ids of text holding no added token: normalise, split, WordPiece.
    fn plain_ids(&self, text: &str, scratch: &mut Scratch, ids: &mut Vec<u32>) {
        normalize(text, scratch);
        let mut word_start = None;
        for (at, c) in scratch.text.char_indices() {
            let whitespace = c.is_whitespace();
            if whitespace || is_punctuation(c) {
                if let Some(start) = word_start.take() {
                    self.word_ids(&scratch.text[start..at], ids);
                }
                if !whitespace {
                    self.word_ids(&scratch.text[at..at + c.len_utf8()], ids);
                }
            } else if word_start.is_none() {
                word_start = Some(at);
            }
        }
        if let Some(start) = word_start {
            self.word_ids(&scratch.text[start..], ids);
        }
    }

    /// WordPiece of one word: the longest known piece from the left, then
    /// the longest known continuation, until the word is used up; the
    /// unknown token alone if some remainder has no piece or the word is
    /// longer than the limit in characters.
    fn word_ids(&self, word: &str, ids: &mut Vec<u32>) {
        let before = ids.len();
        if word.chars().count() > self.max_chars {
            ids.push(self.unk);
            return;
        }
        let mut start = 0;
        while start < word.len() {
            let pieces = if start == 0 { &self.initial } else { &self.continuation };
            let mut end = word.len();
            let found = loop {
                if let Some(&id) = pieces.get(&word[start..end]) {
                    break Some(id);
                }
                match word[start..end].chars().next_back() {
                    Some(last) if end - last.len_utf8() > start => end -= last.len_utf8(),
                    _ => break None,
                }
            };
            let Some(id) = found else {
                ids.truncate(before);
                ids.push(self.unk);
                return;
            };
            ids.push(id);
            start = end;
        }
    }
}

/// BERT's punctuation: ASCII punctuation or any Unicode `P*` character.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || (!c.is_ascii() && c.is_punctuation())
}

/// A CJK ideograph, which BERT splits into a word of its own (the blocks
/// the `tokenizers` crate lists).
fn is_cjk(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// BERT's normaliser into `scratch.text`: drop NUL, U+FFFD and control or
/// format characters (`\t`, `\n`, `\r` are whitespace), whitespace to a
/// space, spaces around CJK ideographs; then NFD without non-spacing
/// marks, then lower case. ASCII text skips the Unicode tables.
fn normalize(text: &str, scratch: &mut Scratch) {
    let out = &mut scratch.text;
    out.clear();
    for c in text.chars() {
        let whitespace = matches!(c, '\t' | '\n' | '\r') || c.is_whitespace();
        let control = !matches!(c, '\t' | '\n' | '\r') && (c.is_ascii_control() || (!c.is_ascii() && c.is_other()));
        if c == '\0' || c == '\u{fffd}' || control {
            continue;
        }
        if whitespace {
            out.push(' ');
        } else if is_cjk(c) {
            out.extend([' ', c, ' ']);
        } else {
            out.push(c);
        }
    }
    if out.is_ascii() {
        out.make_ascii_lowercase();
        return;
    }
    let decomposed = &mut scratch.decomposed;
    decomposed.clear();
    decomposed.extend(out.as_str().nfd().map(|(c, _)| c).filter(|c| !c.is_mark_nonspacing()));
    out.clear();
    out.extend(decomposed.chars().flat_map(char::to_lowercase));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::path::Path;

    fn minilm() -> Tokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2/tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(dir).expect("MiniLM's tokenizer in models/ (run `make models`)");
        tokenizer.with_padding(None).with_truncation(None).unwrap();
        tokenizer
    }

    /// Every text's ids equal the crate's, or the first that differs is shown.
    fn assert_same_ids(tokenizer: &Tokenizer, texts: &[String]) {
        let fast = WordPiece::from_tokenizer(tokenizer).expect("MiniLM's tokenizer is supported");
        let (mut scratch, mut ids) = (Scratch::default(), Vec::new());
        for text in texts {
            ids.clear();
            fast.ids(text, &mut scratch, &mut ids);
            let expected = tokenizer.encode(text.as_str(), false).unwrap();
            assert_eq!(ids, expected.get_ids(), "{text:?}: {:?}", expected.get_tokens());
        }
    }

    #[test]
    fn hard_cases_match_the_tokenizers_crate() {
        let long_word = "a".repeat(101);
        let at_limit = "b".repeat(100);
        let cases = [
            "",
            "   ",
            "Hello, World! It's a TEST...",
            "the film's plot drags -- but the acting is superb.",
            "Café naïve résumé Ångström ﬁne",
            "İstanbul ǅ ẞ Σίσυφος ΣΑΣ",
            "野口里佳 Noguchi Rika 東京",
            "tabs\tnew\nlines\rand\u{b}vertical\u{c}feed",
            "nul\0here \u{fffd} soft\u{ad}hyphen zero\u{200b}width joiner\u{200d}x",
            "emoji 😀👍🏽 and symbols $ € £ ¥ © ® ™ ° ± ×",
            "«quotes» “curly” ‘single’ — dash – en … ellipsis ¿qué? ¡sí!",
            "[CLS] literal [SEP] and [UNK][MASK][PAD] and [cls] lower [CLS",
            "a[CLS]b [SEP]",
            "unaffable unbelievably antidisestablishmentarianism",
            "##ing starts with the prefix ## alone",
            "x\u{301}\u{323} e\u{301} combining marks a\u{20dd} enclosing",
            "ﾊﾝｶｸ カタカナ ひらがな 한국어 العربية עברית हिन्दी ไทย",
            "\u{e000}private use\u{f8ff} and \u{feff}BOM",
            "numbers 3.14 1,000 2nd 4th ½ ² ①",
            "CamelCaseWord snake_case_word kebab-case-word",
            "trailing space ",
            " leading space",
            long_word.as_str(),
            at_limit.as_str(),
        ];
        assert_same_ids(&minilm(), &cases.map(String::from));
    }

    #[test]
    fn every_ascii_character_matches_the_tokenizers_crate() {
        let texts: Vec<String> = (0u8..128).map(|b| format!("a{}b {} c", b as char, b as char)).collect();
        assert_same_ids(&minilm(), &texts);
    }

    /// Random strings over letters, accents, marks, CJK, punctuation,
    /// whitespace and controls, seeded.
    #[test]
    fn random_text_matches_the_tokenizers_crate() {
        let alphabet: Vec<char> = "aeiouxyzAEIOUXYZ éÉüñçøßİıΣσς\u{301}\u{308}\u{20dd}中文字日本語한글カ .,;:!?'\"()[]-_/\\@#$%^&*~`|<>{}+=\t\n\r\u{a0}\u{2003}\u{200b}\u{0}\u{7f}\u{1b}\u{fffd}😀0123456789½"
            .chars()
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let texts: Vec<String> = (0..3000)
            .map(|_| {
                let len = rng.random_range(0..60);
                (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect()
            })
            .collect();
        assert_same_ids(&minilm(), &texts);
    }

    #[test]
    fn the_fixture_reviews_match_the_tokenizers_crate() {
        let reference = crate::text_encoder::tests::reference();
        let texts: Vec<String> =
            reference["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
        assert!(!texts.is_empty());
        assert_same_ids(&minilm(), &texts);
    }

    #[test]
    fn another_pipeline_is_not_claimed() {
        let mut tokenizer = minilm();
        tokenizer.with_normalizer(None::<NormalizerWrapper>).unwrap();
        assert!(WordPiece::from_tokenizer(&tokenizer).is_none());
        let mut tokenizer = minilm();
        tokenizer.set_encode_special_tokens(true);
        assert!(WordPiece::from_tokenizer(&tokenizer).is_none());
    }
}

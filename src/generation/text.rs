//! The checkpoint's tokenizer (`tokenizer.json`, read by the Hugging Face `tokenizers` crate)
//! and the streaming of generated text: text is released as soon as it is final, never half a
//! UTF-8 character (byte-level tokens can split one) and never the start of a stop string that
//! the next token might complete.

use std::path::{Path, PathBuf};

/// A checkpoint's tokenizer.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl TextTokenizer {
    /// The tokenizer in `dir/tokenizer.json`, or None when there is no such file.
    pub fn open(dir: &Path) -> Result<Option<TextTokenizer>, String> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Ok(None);
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| format!("{}: not a tokenizer: {}", path.display(), one_line(&*e)))?;
        Ok(Some(TextTokenizer { inner, path }))
    }

    /// The tokenizer in `dir/tokenizer.json`; `why` says which option needs it when it is
    /// missing.
    pub fn require(dir: &Path, why: &str) -> Result<TextTokenizer, String> {
        TextTokenizer::open(dir)?.ok_or_else(|| TextTokenizer::missing(dir, why))
    }

    /// The error for a checkpoint in `dir` that has no tokenizer which `why` needs.
    pub fn missing(dir: &Path, why: &str) -> String {
        format!("{}: no tokenizer.json, which {why} needs", dir.display())
    }

    /// The ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (a BOS
    /// token, for the models that add one), as `tokenizer(text)` does in transformers.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>, String> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| format!("{}: cannot encode: {}", self.path.display(), one_line(&*e)))?;
        Ok(encoding.get_ids().iter().map(|&id| id as i64).collect())
    }

    /// The text of `ids`, with or without the special tokens (`<|im_end|>`, `</s>`, ...).
    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String, String> {
        let ids: Vec<u32> = ids
            .iter()
            .map(|&id| u32::try_from(id).map_err(|_| format!("token id {id} is not a token")))
            .collect::<Result<_, _>>()?;
        self.inner
            .decode(&ids, skip_special_tokens)
            .map_err(|e| format!("{}: cannot decode: {}", self.path.display(), one_line(&*e)))
    }

    /// The id of the special token spelled `text` (`<|im_end|>`, `</s>`), if there is one.
    /// Special tokens are left out of the decoded text, so a stop string that names one stops
    /// at its id instead.
    pub fn special_token_id(&self, text: &str) -> Option<i64> {
        let id = self.inner.token_to_id(text)?;
        let added = self.inner.get_added_tokens_decoder();
        added.get(&id).filter(|t| t.special).map(|_| id as i64)
    }

    /// How many tokens the vocabulary has, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Where the tokenizer was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn one_line(e: &(dyn std::error::Error + Send + Sync)) -> String {
    e.to_string().replace('\n', " ")
}

/// The text generated for one prompt, released in pieces as tokens arrive.
///
/// ```text
/// let mut stream = TextStream::new(&["\n\n"]);
/// stream.push("Paris.")   -> Some("Paris.")
/// stream.push("Paris.\n") -> None      ("\n" may begin the stop string)
/// stream.push("Paris.\nIt") -> Some("\nIt")
/// ```
pub struct TextStream {
    stops: Vec<String>,
    released: usize,
    text: String,
    stopped: bool,
}

impl TextStream {
    /// A stream that ends at the first of the `stops` strings (none: never).
    pub fn new(stops: &[String]) -> TextStream {
        TextStream {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            released: 0,
            text: String::new(),
            stopped: false,
        }
    }

    /// Takes the whole decoded text so far and returns the part that is now final and was not
    /// returned before. Text that ends in an incomplete character (U+FFFD from a split byte
    /// sequence) waits for the next token; a stop string ends the stream, its text excluded.
    pub fn push(&mut self, decoded: &str) -> String {
        if self.stopped {
            return String::new();
        }
        if !decoded.starts_with(&self.text[..self.released]) {
            // The decoder rewrote text already released (a clean-up of spaces across a token
            // boundary): what was printed stays printed; the text goes on from where the two
            // agree, so `text()` is always the decoder's.
            self.released = common_prefix(&self.text[..self.released], decoded);
        }
        self.text = decoded.to_string();
        // A stop string can only begin in text not yet released (released text never ends
        // with the start of one), so the search starts a stop string's length before it.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let search_from = floor_char_boundary(&self.text, self.released.saturating_sub(longest));
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|i| search_from + i)
            })
            .min()
        {
            self.text.truncate(at);
            self.stopped = true;
            return self.release(at);
        }
        let incomplete = self.text.len() - self.text.trim_end_matches('\u{FFFD}').len();
        let held = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.text, s))
            .chain([incomplete])
            .max()
            .unwrap_or(0);
        self.release(self.text.len() - held)
    }

    /// Whether a stop string has been seen.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Ends the stream: whatever was held back (a partial stop string that never completed).
    pub fn finish(&mut self) -> String {
        let end = self.text.len();
        self.release(end)
    }

    /// The whole text of the stream (up to a stop string, which is excluded).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn release(&mut self, end: usize) -> String {
        let end = end.max(self.released);
        let piece = self.text[self.released..end].to_string();
        self.released = end;
        piece
    }
}

/// The length of the longest proper prefix of `stop` that `text` ends with, on a character
/// boundary of `text`.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    (1..stop.len())
        .rev()
        .find(|&n| {
            stop.is_char_boundary(n)
                && text.len() >= n
                && text.is_char_boundary(text.len() - n)
                && text.ends_with(&stop[..n])
        })
        .unwrap_or(0)
}

/// The length of the common prefix of `a` and `b`, on a character boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_split_character_waits_for_its_last_byte() {
        let mut stream = TextStream::new(&[]);
        assert_eq!(stream.push("caf"), "caf");
        assert_eq!(stream.push("caf\u{FFFD}"), "");
        assert_eq!(stream.push("café"), "é");
        assert_eq!(stream.finish(), "");
        assert_eq!(stream.text(), "café");
    }

    #[test]
    fn text_the_decoder_rewrites_goes_on_from_where_it_agrees() {
        let mut stream = TextStream::new(&[]);
        assert_eq!(stream.push("Hello "), "Hello ");
        assert_eq!(stream.push("Hello, you"), ", you");
        assert_eq!(stream.text(), "Hello, you");
    }

    #[test]
    fn the_start_of_a_stop_string_is_held_until_it_is_decided() {
        let mut stream = TextStream::new(&stops(&["\nUser:"]));
        assert_eq!(stream.push("Paris."), "Paris.");
        assert_eq!(stream.push("Paris.\nUs"), "");
        assert_eq!(stream.push("Paris.\nUsually"), "\nUsually");
        assert_eq!(stream.push("Paris.\nUsually\nUser: hi"), "");
        assert!(stream.stopped());
        assert_eq!(stream.text(), "Paris.\nUsually");
        assert_eq!(stream.push("Paris.\nUsually\nUser: hi more"), "");
    }

    #[test]
    fn a_stop_string_that_completes_across_tokens_cuts_there() {
        let mut stream = TextStream::new(&stops(&["END", "xy"]));
        assert_eq!(stream.push("abcE"), "abc");
        assert_eq!(stream.push("abcEN"), "");
        assert_eq!(stream.push("abcENDxy"), "");
        assert_eq!(stream.text(), "abc");
    }

    #[test]
    fn held_text_is_released_when_the_stream_ends() {
        let mut stream = TextStream::new(&stops(&["\n\n"]));
        assert_eq!(stream.push("one\n"), "one");
        assert_eq!(stream.finish(), "\n");
        assert_eq!(stream.text(), "one\n");
    }

    #[test]
    fn multibyte_stop_strings_are_matched_on_character_boundaries() {
        let mut stream = TextStream::new(&stops(&["éé"]));
        assert_eq!(stream.push("aé"), "a");
        assert_eq!(stream.push("aéb"), "éb");
        assert_eq!(stream.push("aébéé"), "");
        assert_eq!(stream.text(), "aéb");
    }
}

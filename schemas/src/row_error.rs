//! Why a row has no scores: the reasons, the column each one blames, and the
//! text of the `error` column (`"<reason>: <message>"`), written and read
//! back here only, so the reason a job counts or reports is the one the
//! scoring function gave.

use std::fmt;

/// Which input column a row error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorColumn {
    /// The image or text column.
    Input,
    /// The label column.
    Label,
}

/// Why a row could not be scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowErrorReason {
    /// The input value is null.
    NullInput,
    /// The image bytes are empty.
    EmptyImage,
    /// The bytes are not a decodable PNG or JPEG.
    UndecodableImage,
    /// The text is empty or only whitespace.
    EmptyText,
    /// A binary text column holds bytes that are not UTF-8.
    NotUtf8,
    /// The label is null.
    NullLabel,
    /// The label is not a class of the proxy.
    LabelOutOfRange,
}

impl RowErrorReason {
    /// Every reason.
    pub const ALL: [RowErrorReason; 7] = [
        Self::NullInput,
        Self::EmptyImage,
        Self::UndecodableImage,
        Self::EmptyText,
        Self::NotUtf8,
        Self::NullLabel,
        Self::LabelOutOfRange,
    ];

    /// Its stable name: the `error` column's prefix and the manifest's
    /// `scoring.skipped` key.
    pub const fn name(self) -> &'static str {
        match self {
            Self::NullInput => "null_input",
            Self::EmptyImage => "empty_image",
            Self::UndecodableImage => "undecodable_image",
            Self::EmptyText => "empty_text",
            Self::NotUtf8 => "not_utf8",
            Self::NullLabel => "null_label",
            Self::LabelOutOfRange => "label_out_of_range",
        }
    }

    /// The column at fault.
    pub const fn column(self) -> ErrorColumn {
        match self {
            Self::NullLabel | Self::LabelOutOfRange => ErrorColumn::Label,
            _ => ErrorColumn::Input,
        }
    }

    /// The `error` column's text for this reason and its human-readable `message`.
    pub fn error_text(self, message: &str) -> String {
        format!("{}: {message}", self.name())
    }

    /// The reason an `error` column's text starts with; `None` for a text
    /// sieve did not write.
    pub fn of(error_text: &str) -> Option<Self> {
        let (name, _) = error_text.split_once(": ")?;
        Self::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl fmt::Display for RowErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_text_reads_back_as_the_reason_that_wrote_it() {
        for reason in RowErrorReason::ALL {
            let text = reason.error_text("label 7 outside 0..2: a message with colons and the word label");
            assert_eq!(RowErrorReason::of(&text), Some(reason), "{text}");
        }
        assert_eq!(RowErrorReason::of("no reason here"), None);
        assert_eq!(RowErrorReason::of("not_a_reason: detail"), None);
        assert_eq!(RowErrorReason::UndecodableImage.column(), ErrorColumn::Input);
        assert_eq!(RowErrorReason::LabelOutOfRange.column(), ErrorColumn::Label);
    }
}

//! A minimal JSON writer (the console's only serialisation need; no dependency for it).

use std::fmt::Write;

/// Writes JSON into a string, inserting the commas.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: String,
    comma: bool,
}

impl Writer {
    pub(crate) fn new() -> Writer {
        Writer::default()
    }

    pub(crate) fn finish(self) -> String {
        self.buf
    }

    fn sep(&mut self) {
        if self.comma {
            self.buf.push(',');
        }
    }

    pub(crate) fn begin_object(&mut self) -> &mut Self {
        self.sep();
        self.buf.push('{');
        self.comma = false;
        self
    }

    pub(crate) fn end_object(&mut self) -> &mut Self {
        self.buf.push('}');
        self.comma = true;
        self
    }

    pub(crate) fn begin_array(&mut self) -> &mut Self {
        self.sep();
        self.buf.push('[');
        self.comma = false;
        self
    }

    pub(crate) fn end_array(&mut self) -> &mut Self {
        self.buf.push(']');
        self.comma = true;
        self
    }

    /// An object key; the next call writes its value.
    pub(crate) fn key(&mut self, key: &str) -> &mut Self {
        self.sep();
        escape_into(&mut self.buf, key);
        self.buf.push(':');
        self.comma = false;
        self
    }

    pub(crate) fn str(&mut self, value: &str) -> &mut Self {
        self.sep();
        escape_into(&mut self.buf, value);
        self.comma = true;
        self
    }

    pub(crate) fn opt_str(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(v),
            None => self.null(),
        }
    }

    pub(crate) fn u64(&mut self, value: u64) -> &mut Self {
        self.sep();
        let _ = write!(self.buf, "{value}");
        self.comma = true;
        self
    }

    pub(crate) fn i64(&mut self, value: i64) -> &mut Self {
        self.sep();
        let _ = write!(self.buf, "{value}");
        self.comma = true;
        self
    }

    pub(crate) fn opt_u64(&mut self, value: Option<u64>) -> &mut Self {
        match value {
            Some(v) => self.u64(v),
            None => self.null(),
        }
    }

    /// A number with at most three decimals; `null` when not finite.
    pub(crate) fn f64(&mut self, value: f64) -> &mut Self {
        if !value.is_finite() {
            return self.null();
        }
        self.sep();
        let _ = write!(self.buf, "{}", (value * 1000.0).round() / 1000.0);
        self.comma = true;
        self
    }

    pub(crate) fn opt_f64(&mut self, value: Option<f64>) -> &mut Self {
        match value {
            Some(v) => self.f64(v),
            None => self.null(),
        }
    }

    pub(crate) fn bool(&mut self, value: bool) -> &mut Self {
        self.sep();
        self.buf.push_str(if value { "true" } else { "false" });
        self.comma = true;
        self
    }

    pub(crate) fn null(&mut self) -> &mut Self {
        self.sep();
        self.buf.push_str("null");
        self.comma = true;
        self
    }
}

/// Appends `s` as a JSON string literal. `<`, `>` and `&` are escaped too, so that the text
/// stays inert even if some client pastes it into HTML.
pub(crate) fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_nesting_and_escapes() {
        let mut w = Writer::new();
        w.begin_object();
        w.key("a").u64(1);
        w.key("b").begin_array().str("x\"<script>\n").null().f64(1.23456).f64(f64::NAN).end_array();
        w.key("c").begin_object().end_object();
        w.end_object();
        assert_eq!(w.finish(), r#"{"a":1,"b":["x\"\u003cscript\u003e\n",null,1.235,null],"c":{}}"#);
    }
}

//! `${key}` substitution between values, with cycle detection.

use std::collections::{BTreeMap, HashMap};

/// Longest value substitution may produce; stops `a=${b}${b}`, `b=${c}${c}`, ... from
/// doubling its way through memory.
pub const MAX_RESOLVED_LEN: usize = 64 * 1024;

/// Why one key's value could not be resolved. `key` is the key whose value holds the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubstError {
    pub key: String,
    pub raw: String,
    pub reason: String,
}

/// Resolves values on demand (only keys somebody asks for), memoizing the results.
pub struct Resolver<'a> {
    /// Explicit values and known keys' defaults. Keys absent here are unset.
    raw: &'a BTreeMap<String, String>,
    resolved: HashMap<String, String>,
}

impl<'a> Resolver<'a> {
    pub fn new(raw: &'a BTreeMap<String, String>) -> Resolver<'a> {
        Resolver {
            raw,
            resolved: HashMap::new(),
        }
    }

    /// The raw (unsubstituted) value of `key`, if set.
    pub fn raw(&self, key: &str) -> Option<&'a str> {
        self.raw.get(key).map(String::as_str)
    }

    /// The substituted value of `key`, or `None` when it is unset.
    pub fn get(&mut self, key: &str) -> Result<Option<String>, SubstError> {
        if !self.raw.contains_key(key) {
            return Ok(None);
        }
        let mut stack = Vec::new();
        self.resolve(key, &mut stack).map(Some)
    }

    fn resolve(&mut self, key: &str, stack: &mut Vec<String>) -> Result<String, SubstError> {
        if let Some(done) = self.resolved.get(key) {
            return Ok(done.clone());
        }
        let raw = self.raw.get(key).map(String::as_str).unwrap_or("");
        let error = |reason: String| SubstError {
            key: key.to_string(),
            raw: raw.to_string(),
            reason,
        };
        if let Some(start) = stack.iter().position(|k| k == key) {
            let mut cycle: Vec<&str> = stack[start..].iter().map(String::as_str).collect();
            cycle.push(key);
            return Err(error(format!("substitution cycle: {}", cycle.join(" -> "))));
        }
        stack.push(key.to_string());
        let mut out = String::new();
        let mut rest = raw;
        while let Some(open) = rest.find("${") {
            out.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            let close = after
                .find('}')
                .ok_or_else(|| error("unterminated \"${\" (expected \"${key}\")".into()))?;
            let name = &after[..close];
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '$' || c == '{') {
                return Err(error(format!("malformed reference \"${{{name}}}\"")));
            }
            if !self.raw.contains_key(name) {
                return Err(error(format!("refers to \"${{{name}}}\", which is not set")));
            }
            let value = self.resolve(name, stack)?;
            out.push_str(&value);
            if out.len() > MAX_RESOLVED_LEN {
                return Err(error(format!(
                    "value is longer than {MAX_RESOLVED_LEN} bytes after substitution"
                )));
            }
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        if out.len() > MAX_RESOLVED_LEN {
            return Err(error(format!(
                "value is longer than {MAX_RESOLVED_LEN} bytes after substitution"
            )));
        }
        stack.pop();
        self.resolved.insert(key.to_string(), out.clone());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn substitutes_transitively() {
        let raw = map(&[
            ("a", "/root"),
            ("b", "${a}/b"),
            ("c", "${b}/c and ${a}"),
            ("d", "$ {a} $a ${"),
        ]);
        let mut resolver = Resolver::new(&raw);
        assert_eq!(resolver.get("c").unwrap().unwrap(), "/root/b/c and /root");
        assert_eq!(resolver.get("b").unwrap().unwrap(), "/root/b");
        assert_eq!(resolver.get("missing").unwrap(), None);
        let err = resolver.get("d").unwrap_err();
        assert!(err.reason.contains("unterminated"), "{err:?}");
    }

    #[test]
    fn detects_cycles() {
        let raw = map(&[("a", "${b}"), ("b", "x${c}"), ("c", "${a}"), ("self", "${self}")]);
        let mut resolver = Resolver::new(&raw);
        let err = resolver.get("a").unwrap_err();
        assert_eq!(err.key, "a");
        assert_eq!(err.reason, "substitution cycle: a -> b -> c -> a");
        let err = resolver.get("self").unwrap_err();
        assert_eq!(err.reason, "substitution cycle: self -> self");
    }

    #[test]
    fn reports_undefined_and_malformed() {
        let raw = map(&[("a", "${nope}/x"), ("b", "${}"), ("c", "${a b}")]);
        let mut resolver = Resolver::new(&raw);
        let err = resolver.get("a").unwrap_err();
        assert_eq!((err.key.as_str(), err.raw.as_str()), ("a", "${nope}/x"));
        assert!(err.reason.contains("\"${nope}\", which is not set"), "{err:?}");
        assert!(resolver.get("b").unwrap_err().reason.contains("malformed"));
        assert!(resolver.get("c").unwrap_err().reason.contains("malformed"));
    }

    #[test]
    fn bounds_blowup() {
        let mut raw = map(&[("k0", "0123456789abcdef")]);
        for i in 1..40 {
            raw.insert(format!("k{i}"), format!("${{k{}}}${{k{}}}", i - 1, i - 1));
        }
        let mut resolver = Resolver::new(&raw);
        let err = resolver.get("k39").unwrap_err();
        assert!(err.reason.contains("longer than"), "{err:?}");
    }
}

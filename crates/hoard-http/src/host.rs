//! The `Host` rule of RFC 9112 §3.2: a server answers 400 to an HTTP/1.1 request without a
//! `Host` header, and to any request with more than one or with an invalid value. Shared by the
//! hyper path (here) and the worker's direct path.

use http::{HeaderMap, Version};

/// Why a request's `Host` is refused, or `None` when it is fine.
pub fn host_problem(version: Version, headers: &HeaderMap) -> Option<&'static str> {
    let mut hosts = headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::HTTP_11 => Some(MISSING_HOST),
        (None, _) => None,
        (Some(_), Some(_)) => Some(SEVERAL_HOSTS),
        (Some(value), None) if !valid_host(value.as_bytes()) => Some(INVALID_HOST),
        (Some(_), None) => None,
    }
}

pub const MISSING_HOST: &str = "an HTTP/1.1 request needs a Host header";
pub const SEVERAL_HOSTS: &str = "a request must have only one Host header";
pub const INVALID_HOST: &str = "invalid Host header";

/// `uri-host [ ":" port ]` (RFC 3986): an empty value is allowed (RFC 9110 §7.2), and the
/// characters a reg-name, an IP literal and a port may hold.
pub fn valid_host(value: &[u8]) -> bool {
    value.iter().all(|&byte| {
        byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(hosts: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for host in hosts {
            headers.append(http::header::HOST, HeaderValue::from_static(host));
        }
        headers
    }

    #[test]
    fn one_valid_host() {
        assert_eq!(host_problem(Version::HTTP_11, &headers(&["a.b:80"])), None);
        assert_eq!(host_problem(Version::HTTP_11, &headers(&["[::1]:8080"])), None);
        assert_eq!(host_problem(Version::HTTP_11, &headers(&[""])), None);
        assert_eq!(host_problem(Version::HTTP_10, &headers(&[])), None);
        assert_eq!(host_problem(Version::HTTP_11, &headers(&[])), Some(MISSING_HOST));
        assert_eq!(
            host_problem(Version::HTTP_10, &headers(&["a", "b"])),
            Some(SEVERAL_HOSTS)
        );
        assert_eq!(
            host_problem(Version::HTTP_11, &headers(&["a", "a"])),
            Some(SEVERAL_HOSTS)
        );
        assert_eq!(host_problem(Version::HTTP_11, &headers(&["a b"])), Some(INVALID_HOST));
        assert_eq!(host_problem(Version::HTTP_11, &headers(&["a/b"])), Some(INVALID_HOST));
        assert_eq!(host_problem(Version::HTTP_11, &headers(&["u@a"])), Some(INVALID_HOST));
    }
}

//! The S3 backend (opendal `services-s3`).
//!
//! S3 has no directories: a "directory" is a prefix with at least one object under it (or a
//! `dir/` marker object). Status of a key that is not an object checks for such a prefix with a
//! one-key listing.
//!
//! Modification times are whole seconds: HEAD answers `Last-Modified` as an HTTP date while
//! listings carry milliseconds, and a file must have the same version whichever of the two
//! produced its status, so listing times are rounded down to the second as well.
//!
//! opendal's own configuration loading is off (no `AWS_*` variables, no `~/.aws/config`, no
//! instance metadata): everything comes from [`S3Settings`], which the caller resolves from
//! `hoard.underfs.s3.*` and an explicit environment snapshot.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Once};

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use opendal::raw::Servicer;
use opendal::{Builder, ErrorKind, OperationContext, Operator};

use crate::convert::{self, EntryKind};
use crate::{EnvLookup, RawEntry, RawStatus, Ufs, UfsError, UfsOptions};

/// Region used when neither the config nor the environment names one.
pub(crate) const DEFAULT_REGION: &str = "us-east-1";

/// Static S3 credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Where and as whom to reach S3, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `http(s)://host:port` of an S3-compatible service; `None` is AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    /// `None`: requests are sent unsigned (anonymous access to a public bucket).
    pub credentials: Option<S3Credentials>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

impl S3Settings {
    /// Resolves each setting from `hoard.underfs.s3.*` first, then from the environment `env`:
    ///
    /// - endpoint: `endpoint`, else `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, else AWS;
    /// - region: `region`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`, else `us-east-1`;
    /// - credentials: `access.key.id` + `secret.access.key` if either is configured (then both
    ///   must be), else `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`),
    ///   else none (unsigned requests). Credentials are never mixed across the two sources.
    ///
    /// Empty values count as unset.
    pub fn resolve(config: &hoard_config::S3Config, env: EnvLookup<'_>) -> Result<S3Settings, UfsError> {
        let env = |name: &str| non_empty(env(name));
        let endpoint = non_empty(config.endpoint.clone())
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .map(|e| e.trim_end_matches('/').to_string());
        if let Some(endpoint) = &endpoint {
            let lower = endpoint.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                return Err(UfsError::Config(format!(
                    "the S3 endpoint {endpoint:?} must start with http:// or https://"
                )));
            }
        }
        let region = non_empty(config.region.clone())
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| DEFAULT_REGION.to_string());

        let configured = (
            non_empty(config.access_key_id.clone()),
            non_empty(config.secret_access_key.clone()),
        );
        let credentials = match configured {
            (Some(access_key_id), Some(secret_access_key)) => Some(S3Credentials {
                access_key_id,
                secret_access_key,
                session_token: None,
            }),
            (Some(_), None) | (None, Some(_)) => {
                return Err(UfsError::Config(
                    "set both hoard.underfs.s3.access.key.id and hoard.underfs.s3.secret.access.key, or neither"
                        .to_string(),
                ))
            }
            (None, None) => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(access_key_id), Some(secret_access_key)) => Some(S3Credentials {
                    access_key_id,
                    secret_access_key,
                    session_token: env("AWS_SESSION_TOKEN"),
                }),
                (Some(_), None) | (None, Some(_)) => {
                    return Err(UfsError::Config(
                        "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither".to_string(),
                    ))
                }
                (None, None) => None,
            },
        };
        Ok(S3Settings {
            endpoint,
            region,
            credentials,
        })
    }
}

/// One bucket, optionally below a prefix.
#[derive(Clone)]
pub struct S3Ufs {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: String,
    prefix: String,
    /// Status and listings: opendal's full stack.
    op: Operator,
    /// Reads: the bare S3 service under our timeout and retry layers. opendal's default stack
    /// insists a bounded read returns exactly the bytes asked for, so a range past the end of
    /// the object fails (and is retried) instead of returning the tail S3 sends (a 206 whose
    /// Content-Range stops at the last byte). A body cut short is still an error: the HTTP
    /// layer checks it against its Content-Length.
    read_op: Operator,
}

impl fmt::Debug for S3Ufs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Ufs")
            .field("bucket", &self.inner.bucket)
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

/// opendal's S3 service needs a process-wide HTTP transport; install reqwest's once.
fn install_http_transport() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(opendal::install_default);
}

fn s3_builder(bucket: &str, root: &str, settings: &S3Settings) -> opendal::services::S3 {
    let mut builder = opendal::services::S3::default()
        .bucket(bucket)
        .root(root)
        .region(&settings.region)
        .disable_config_load()
        .disable_ec2_metadata();
    match &settings.endpoint {
        Some(endpoint) => builder = builder.endpoint(endpoint),
        None if !bucket.contains('.') => builder = builder.enable_virtual_host_style(),
        None => {}
    }
    builder = match &settings.credentials {
        Some(credentials) => {
            let builder = builder
                .access_key_id(&credentials.access_key_id)
                .secret_access_key(&credentials.secret_access_key);
            match &credentials.session_token {
                Some(token) => builder.session_token(token),
                None => builder,
            }
        }
        None => builder.skip_signature(),
    };
    builder
}

impl S3Ufs {
    /// `prefix` is a key prefix without leading or trailing `/` (`""` for the whole bucket).
    /// Path-style addressing is used with a custom endpoint (MinIO, moto, Ceph...) and for
    /// bucket names with dots; virtual-host style on AWS otherwise. No request is sent here.
    pub fn new(bucket: &str, prefix: &str, settings: &S3Settings, options: &UfsOptions) -> Result<S3Ufs, UfsError> {
        install_http_transport();
        let prefix = prefix.trim_matches('/');
        let root = if prefix.is_empty() {
            "/".to_string()
        } else {
            format!("/{prefix}/")
        };
        let config_error = |err: opendal::Error| UfsError::Config(format!("S3 bucket {bucket:?}: {err}"));
        let bare: Servicer = Arc::new(s3_builder(bucket, &root, settings).build().map_err(config_error)?);
        let read_op = Operator::from_parts(OperationContext::default(), bare);
        let op = Operator::new(s3_builder(bucket, &root, settings)).map_err(config_error)?;
        Ok(S3Ufs {
            inner: Arc::new(Inner {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                op: convert::layered(op, options),
                read_op: convert::layered(read_op, options),
            }),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }
}

/// Rounds down to whole seconds (see the module docs).
fn whole_seconds(ms: Option<i64>) -> Option<i64> {
    ms.map(|ms| ms.div_euclid(1000) * 1000)
}

fn dir_prefix(relative: &str) -> String {
    if relative.is_empty() {
        String::new()
    } else {
        format!("{relative}/")
    }
}

impl Inner {
    /// True when some object lies under `relative/` (or a `relative/` marker exists).
    async fn is_prefix(&self, relative: &str) -> Result<bool, UfsError> {
        let mut lister = self
            .op
            .lister_with(&dir_prefix(relative))
            .limit(1)
            .await
            .map_err(|err| convert::from_opendal(err, relative))?;
        let first = lister
            .try_next()
            .await
            .map_err(|err| convert::from_opendal(err, relative))?;
        Ok(first.is_some())
    }

    fn entry(dir_prefix: &str, entry: &opendal::Entry) -> Option<RawEntry> {
        let name = convert::child_name(dir_prefix, entry.path())?.to_string();
        match convert::entry_status(entry.metadata(), whole_seconds) {
            EntryKind::Known(status) => Some(RawEntry { name, status }),
            EntryKind::Unknown => None,
        }
    }
}

#[async_trait::async_trait]
impl Ufs for S3Ufs {
    async fn status(&self, relative: &str) -> Result<RawStatus, UfsError> {
        convert::check_relative(relative)?;
        if relative.is_empty() {
            return Ok(RawStatus::directory());
        }
        match self.inner.op.stat(relative).await {
            Ok(meta) => Ok(RawStatus {
                is_dir: false,
                length: meta.content_length(),
                modification_time_ms: whole_seconds(convert::metadata_mtime_ms(&meta)),
                etag: meta.etag().map(convert::normalize_etag),
                // The ETag changes with every write: no timestamp race to guard against.
                changed_at: None,
            }),
            Err(err) if err.kind() == ErrorKind::NotFound => {
                let mapped = convert::from_opendal(err, relative);
                if !matches!(mapped, UfsError::NotFound(_)) {
                    return Err(mapped);
                }
                if self.inner.is_prefix(relative).await? {
                    Ok(RawStatus::directory())
                } else {
                    Err(mapped)
                }
            }
            Err(err) => Err(convert::from_opendal(err, relative)),
        }
    }

    async fn read(&self, relative: &str, range: Range<u64>) -> Result<Bytes, UfsError> {
        convert::check_relative(relative)?;
        if relative.is_empty() {
            return Err(UfsError::IsDirectory(relative.to_string()));
        }
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        match self.inner.read_op.read_with(relative).range(range).await {
            Ok(buffer) => Ok(buffer.to_bytes()),
            // The range starts at or past the end of the object.
            Err(err) if err.kind() == ErrorKind::RangeNotSatisfied => Ok(Bytes::new()),
            Err(err) if err.kind() == ErrorKind::NotFound => {
                let mapped = convert::from_opendal(err, relative);
                if !matches!(mapped, UfsError::NotFound(_)) {
                    return Err(mapped);
                }
                if self.inner.is_prefix(relative).await? {
                    Err(UfsError::IsDirectory(relative.to_string()))
                } else {
                    Err(mapped)
                }
            }
            Err(err) => Err(convert::from_opendal(err, relative)),
        }
    }

    /// A conditional GET (`If-Match: <etag>`): S3 answers 412 when the object was replaced, so
    /// the check and the read are one atomic step.
    async fn read_version(&self, relative: &str, range: Range<u64>, expected: &RawStatus) -> Result<Bytes, UfsError> {
        convert::check_relative(relative)?;
        let Some(etag) = expected.etag.as_deref() else {
            return crate::read_then_check_version(self, relative, range, expected).await;
        };
        let end = range.end.min(expected.length);
        if range.start >= end {
            return Ok(Bytes::new());
        }
        match self
            .inner
            .read_op
            .read_with(relative)
            .range(range.start..end)
            .if_match(etag)
            .await
        {
            Ok(buffer) if buffer.len() as u64 == end - range.start => Ok(buffer.to_bytes()),
            Ok(_) => Err(UfsError::Changed(relative.to_string())),
            Err(err) if matches!(err.kind(), ErrorKind::ConditionNotMatch | ErrorKind::RangeNotSatisfied) => {
                Err(UfsError::Changed(relative.to_string()))
            }
            Err(err) => Err(convert::from_opendal(err, relative)),
        }
    }

    async fn list(&self, relative: &str) -> Result<BoxStream<'static, Result<RawEntry, UfsError>>, UfsError> {
        convert::check_relative(relative)?;
        let prefix = dir_prefix(relative);
        let list_path = if prefix.is_empty() { "/" } else { prefix.as_str() };
        let mut lister = self
            .inner
            .op
            .lister(list_path)
            .await
            .map_err(|err| convert::from_opendal(err, relative))?;

        // Peek until the first child, so a prefix with nothing under it is NotFound (or
        // NotDirectory when it names an object) rather than an empty listing.
        let mut exists = relative.is_empty();
        let mut first = None;
        while let Some(entry) = lister
            .try_next()
            .await
            .map_err(|err| convert::from_opendal(err, relative))?
        {
            exists = true; // the `dir/` marker itself or any child
            if let Some(child) = Inner::entry(&prefix, &entry) {
                first = Some(child);
                break;
            }
        }
        if !exists {
            return match self.inner.op.stat(relative).await {
                Ok(_) => Err(UfsError::NotDirectory(relative.to_string())),
                Err(err) => Err(convert::from_opendal(err, relative)),
            };
        }
        let relative = relative.to_string();
        let rest = lister.filter_map(move |item| {
            let result = match item {
                Ok(entry) => Inner::entry(&prefix, &entry).map(Ok),
                Err(err) => Some(Err(convert::from_opendal(err, &relative))),
            };
            futures::future::ready(result)
        });
        Ok(stream::iter(first.map(Ok)).chain(rest).boxed())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    fn config(
        endpoint: Option<&str>,
        region: Option<&str>,
        key: Option<&str>,
        secret: Option<&str>,
    ) -> hoard_config::S3Config {
        hoard_config::S3Config {
            endpoint: endpoint.map(str::to_string),
            region: region.map(str::to_string),
            access_key_id: key.map(str::to_string),
            secret_access_key: secret.map(str::to_string),
        }
    }

    #[test]
    fn config_wins_over_env() {
        let vars = env(&[
            ("AWS_ENDPOINT_URL", "http://env:9000"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "env-key"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
        ]);
        let s = S3Settings::resolve(
            &config(Some("http://conf:9000/"), Some("us-west-2"), Some("k"), Some("s")),
            &vars,
        )
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://conf:9000"));
        assert_eq!(s.region, "us-west-2");
        let c = s.credentials.unwrap();
        assert_eq!((c.access_key_id.as_str(), c.secret_access_key.as_str()), ("k", "s"));
    }

    #[test]
    fn env_fills_what_config_leaves_unset() {
        let vars = env(&[
            ("AWS_ENDPOINT_URL", "http://env:9000"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "env-key"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_SESSION_TOKEN", "tok"),
        ]);
        let s = S3Settings::resolve(&config(None, Some(""), None, None), &vars).unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://env:9000"));
        assert_eq!(s.region, "eu-west-1");
        let c = s.credentials.unwrap();
        assert_eq!(c.access_key_id, "env-key");
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        assert!(!format!("{c:?}").contains("env-secret"), "secrets stay out of logs");

        let vars = env(&[
            ("AWS_REGION", "a"),
            ("AWS_DEFAULT_REGION", "b"),
            ("AWS_ENDPOINT_URL", "http://generic"),
            ("AWS_ENDPOINT_URL_S3", "https://s3.x"),
        ]);
        let s = S3Settings::resolve(&config(None, None, None, None), &vars).unwrap();
        assert_eq!(s.region, "a");
        assert_eq!(s.endpoint.as_deref(), Some("https://s3.x"));
    }

    #[test]
    fn defaults_without_anything() {
        let s = S3Settings::resolve(&config(None, None, None, None), &|_| None).unwrap();
        assert_eq!(
            s,
            S3Settings {
                endpoint: None,
                region: DEFAULT_REGION.to_string(),
                credentials: None
            }
        );
    }

    #[test]
    fn half_credentials_are_refused() {
        assert!(matches!(
            S3Settings::resolve(&config(None, None, Some("k"), None), &|_| None),
            Err(UfsError::Config(_))
        ));
        let vars = env(&[("AWS_ACCESS_KEY_ID", "k")]);
        assert!(matches!(
            S3Settings::resolve(&config(None, None, None, None), &vars),
            Err(UfsError::Config(_))
        ));
        // Config keys are never completed from the environment.
        let vars = env(&[("AWS_SECRET_ACCESS_KEY", "s")]);
        assert!(matches!(
            S3Settings::resolve(&config(None, None, Some("k"), None), &vars),
            Err(UfsError::Config(_))
        ));
        assert!(matches!(
            S3Settings::resolve(&config(Some("minio:9000"), None, None, None), &|_| None),
            Err(UfsError::Config(_))
        ));
    }

    #[test]
    fn modification_times_are_whole_seconds() {
        assert_eq!(whole_seconds(Some(1_700_000_000_123)), Some(1_700_000_000_000));
        assert_eq!(whole_seconds(Some(-1)), Some(-1000));
        assert_eq!(whole_seconds(None), None);
    }
}

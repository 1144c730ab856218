//! Where an object-store location lives (`url = "s3://BUCKET/PREFIX"` and its options) and
//! where its mirror folder is: plain values the config, the locations and the store client
//! all read, so none of them depends on another through it.

use std::path::{Path, PathBuf};

/// Where an object-store location lives, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    /// The bucket.
    pub bucket: String,
    /// The prefix inside it (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// Any S3-compatible server (default: AWS).
    pub endpoint: Option<String>,
    /// The region (default: `us-east-1`).
    pub region: Option<String>,
    /// Whether plain `http://` is allowed (a server on this machine).
    pub allow_http: bool,
}

impl StoreSpec {
    /// Parses `s3://BUCKET[/PREFIX]`; the message says what is wrong.
    pub fn parse_url(url: &str) -> Result<(String, String), String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("`{url}` is not an s3:// URL (s3://BUCKET/PREFIX)"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !bucket_ok {
            return Err(format!(
                "`{bucket}` is not a bucket name (3 to 63 lowercase letters, digits, `-`, `.`)"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
            return Err(format!("prefix `{prefix}` may not hold `.`, `..` or `//`"));
        }
        Ok((bucket.to_string(), prefix.to_string()))
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// The mirror folder of the object-store location `name`.
pub fn mirror_root(home: &Path, name: &str) -> PathBuf {
    home.join(crate::names::STATE_DIR).join("stores").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_bucket_and_prefix() {
        assert_eq!(
            StoreSpec::parse_url("s3://my-bucket/a/b/").unwrap(),
            ("my-bucket".into(), "a/b".into())
        );
        assert_eq!(
            StoreSpec::parse_url("s3://my-bucket").unwrap(),
            ("my-bucket".into(), "".into())
        );
        for bad in [
            "http://x/y",
            "s3://",
            "s3://B_ad/x",
            "s3://ok-bucket/a/../b",
        ] {
            assert!(StoreSpec::parse_url(bad).is_err(), "{bad}");
        }
    }
}

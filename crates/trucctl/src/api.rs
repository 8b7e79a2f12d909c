//! The admin API client: where the relay is, which token to use, and its answers as typed
//! values or errors that say what to do.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How to reach the admin API: flags, else `TRUC_ADMIN_URL` / `TRUC_ADMIN_TOKEN`, else the
/// file `~/.config/truc/trucctl.toml` (`admin = "..."`, `token = "..."`), else
/// `http://127.0.0.1:7480` without a token.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The admin API's base URL.
    #[arg(long = "admin", env = "TRUC_ADMIN_URL", global = true)]
    pub admin: Option<String>,
    /// The bearer token (see `trucctl token new`).
    #[arg(long, env = "TRUC_ADMIN_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The settings file (default `~/.config/truc/trucctl.toml`).
    #[arg(long = "ctl-config", env = "TRUCCTL_CONFIG", global = true)]
    pub ctl_config: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CtlFile {
    admin: Option<String>,
    token: Option<String>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The relay answered with an error.
    #[error("{code}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Stable code.
        code: String,
        /// What the relay said.
        message: String,
    },
    /// The relay could not be reached, or answered something unreadable.
    #[error("{0}")]
    Transport(String),
}

/// A connection to one relay's admin API.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Why the admin API's settings could not be resolved: the exit codes differ.
#[derive(Debug)]
pub enum SettingsError {
    /// The settings file could not be read (exit 3).
    Unreadable(anyhow::Error),
    /// A setting is wrong: a file that does not parse, a URL that is not http(s) (exit 2).
    Invalid(anyhow::Error),
}

impl Api {
    /// Resolves the settings in their order of precedence.
    pub fn from_args(args: &ApiArgs) -> Result<Self, SettingsError> {
        let file = match &args.ctl_config {
            Some(path) => Some(read_file(path)?),
            None => default_file()
                .filter(|p| p.is_file())
                .map(|p| read_file(&p))
                .transpose()?,
        }
        .unwrap_or_default();
        Self::with_file(args, file).map_err(SettingsError::Invalid)
    }

    fn with_file(args: &ApiArgs, file: CtlFile) -> anyhow::Result<Self> {
        let base = args
            .admin
            .clone()
            .or(file.admin)
            .unwrap_or_else(|| "http://127.0.0.1:7480".into());
        let base = base.trim_end_matches('/').to_owned();
        anyhow::ensure!(
            base.starts_with("http://") || base.starts_with("https://"),
            "{base:?} is not an http:// or https:// URL (--admin, TRUC_ADMIN_URL)"
        );
        let token = args.token.clone().or(file.token);
        if token.is_some() && !is_private_http(&base) {
            eprintln!(
                "trucctl: warning: the admin token goes in clear over {base}: use https:// (or a tunnel) to reach a relay on another machine"
            );
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        Ok(Api { base, token, http })
    }

    /// GET a JSON answer.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ApiError> {
        self.send(self.http.get(self.url(path)).query(query)).await
    }

    /// POST a JSON body (or none).
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ApiError> {
        let mut request = self.http.post(self.url(path));
        if let Some(b) = body {
            request = request.json(b);
        }
        self.send(request).await
    }

    /// POST a JSON body for an operation that may take long (a backup of a large store
    /// copied across file systems): the answer is awaited up to `limit` instead of the
    /// usual two minutes.
    pub async fn post_long<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        limit: std::time::Duration,
    ) -> Result<T, ApiError> {
        self.send(self.http.post(self.url(path)).json(body).timeout(limit))
            .await
    }

    /// PUT a JSON body.
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, e: reqwest::Error) -> ApiError {
        if e.is_timeout() {
            return ApiError::Transport(format!(
                "no answer from the admin API at {} in time: the operation may still be running there (see the relay's log)",
                self.base
            ));
        }
        ApiError::Transport(format!(
            "cannot reach the admin API at {}: {e}. Is trucd running? Set --admin or TRUC_ADMIN_URL.",
            self.base
        ))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ApiError::Transport(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::Transport(format!(
                    "unexpected answer from {} ({e}): is it a truc admin API of the same version?",
                    self.base
                ))
            });
        }
        match serde_json::from_slice::<truc_admin::ErrorBody>(&bytes) {
            Ok(body) => {
                let mut message = body.error.message;
                if body.error.code == truc_admin::codes::UNAUTHORIZED && self.token.is_none() {
                    message.push_str(
                        " (no token given: --token, TRUC_ADMIN_TOKEN or the settings file)",
                    );
                }
                Err(ApiError::Refused {
                    status: status.as_u16(),
                    code: body.error.code,
                    message,
                })
            }
            Err(_) => Err(ApiError::Transport(format!(
                "{} answered HTTP {status}: {}",
                self.base,
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))),
        }
    }
}

fn default_file() -> Option<PathBuf> {
    let home = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(home.join("truc").join("trucctl.toml"))
}

fn read_file(path: &std::path::Path) -> Result<CtlFile, SettingsError> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading the settings file {}", path.display()))
        .map_err(SettingsError::Unreadable)?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("the settings file {} is not UTF-8 text", path.display()))
        .map_err(SettingsError::Invalid)?;
    toml::from_str(&text)
        .with_context(|| format!("in the settings file {}", path.display()))
        .map_err(SettingsError::Invalid)
}

/// Whether a token sent to `base` stays private: HTTPS, or plain HTTP to this machine.
fn is_private_http(base: &str) -> bool {
    let Some(rest) = base.strip_prefix("http://") else {
        return true;
    };
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.strip_prefix('[') {
        // [::1]:7480
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_private_http;

    #[test]
    fn a_token_in_clear_is_private_only_on_this_machine() {
        for base in [
            "http://127.0.0.1:7480",
            "http://localhost:7480",
            "http://[::1]:7480",
            "https://relay.example:7480",
            "http://127.0.0.1",
        ] {
            assert!(is_private_http(base), "{base}");
        }
        for base in [
            "http://10.0.0.5:7480",
            "http://relay.example:7480",
            "http://[2001:db8::1]:7480",
        ] {
            assert!(!is_private_http(base), "{base}");
        }
    }
}

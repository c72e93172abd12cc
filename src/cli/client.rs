//! The HTTP client behind the commands that talk to a running daemon
//! (`recalibrate`, `changes`, `exceptions`). Errors say what to check.

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use serde_json::Value;

/// Where the daemon is and how to authenticate.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The daemon's address.
    #[arg(long, env = "DRIFTWARDEN_URL", default_value = "http://127.0.0.1:7878")]
    url: String,
    /// API token [default: DRIFTWARDEN_TOKEN, else the token file]
    #[arg(long, env = "DRIFTWARDEN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Token file written by `serve` when no token is configured.
    #[arg(long, value_name = "PATH", default_value = "driftwarden.token")]
    token_file: std::path::PathBuf,
}

/// A connection to one daemon.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

impl Client {
    pub fn new(args: &ClientArgs) -> Result<Client> {
        let token = match &args.token {
            Some(t) => Some(t.clone()),
            None => std::fs::read_to_string(&args.token_file)
                .ok()
                .map(|t| t.trim().to_string()),
        };
        let http = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            base: args.url.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// POST a JSON body with the token; the answer's JSON.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let req = self
            .http
            .post(self.url(path))
            .bearer_auth(self.token()?)
            .json(body);
        self.send(req)
    }

    /// DELETE with the token and these query parameters; the answer's JSON.
    pub fn delete(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let req = self
            .http
            .delete(self.url(path))
            .query(query)
            .bearer_auth(self.token()?);
        self.send(req)
    }

    fn token(&self) -> Result<&str> {
        match &self.token {
            Some(t) => Ok(t),
            None => bail!(
                "no API token: pass --token, set DRIFTWARDEN_TOKEN, or run where `serve` wrote driftwarden.token (--token-file)"
            ),
        }
    }

    /// GET a JSON answer.
    pub fn get(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(self.url(path)))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn send(&self, req: reqwest::blocking::RequestBuilder) -> Result<Value> {
        let resp = req.send().map_err(|e| {
            anyhow!(
                "cannot reach driftwarden at {}: {e} (is `driftwarden serve` running? set --url or DRIFTWARDEN_URL)",
                self.base
            )
        })?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .with_context(|| format!("driftwarden answered {status} without JSON"))?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            bail!(
                "the daemon refused the token ({}); use the daemon's --token / DRIFTWARDEN_TOKEN",
                body["error"].as_str().unwrap_or("unauthorized")
            );
        }
        if !status.is_success() {
            bail!(
                "driftwarden answered {status}: {}",
                body["error"].as_str().unwrap_or("no reason given")
            );
        }
        Ok(body)
    }
}

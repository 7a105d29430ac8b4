//! The operator password and the login sessions.
//!
//! The password is stored as an argon2id PHC string (`cml-web passwd`, mode 0600). A login opens
//! a session: a random 256-bit token (the `cml_session` cookie) and a second random 256-bit CSRF
//! token that the client must echo in `X-CSRF-Token` on every state-changing request (the cookie
//! is sent by the browser automatically, the header only by our own page). Sessions live in
//! memory only: a restart of cml-web logs everyone out. A session ends on logout or after
//! [`IDLE_TIMEOUT`] without a request.

use std::{
    collections::HashMap,
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString},
};

use super::WebError;

/// The session cookie's name.
pub const COOKIE: &str = "cml_session";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "X-CSRF-Token";
/// A session without requests for this long is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// At most this many sessions at once; the least recently used one goes first.
const MAX_SESSIONS: usize = 64;

/// Hashes `password` into an argon2id PHC string with a random salt.
pub fn hash_password(password: &str) -> Result<String, WebError> {
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).map_err(|e| WebError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| WebError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| WebError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Writes the hash of `password` to `path` (mode 0600, replacing the file atomically).
pub fn write_password_file(path: &Path, password: &str) -> Result<(), WebError> {
    if password.is_empty() {
        return Err(WebError::EmptyPassword);
    }
    let hash = hash_password(password)?;
    let err = |source| WebError::WritePasswordFile {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    // The umask may only clear bits, but say it explicitly.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    writeln!(file, "{hash}")
        .and_then(|()| file.sync_all())
        .map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// Reads and checks the password file.
pub fn read_password_file(path: &Path) -> Result<String, WebError> {
    let text = fs::read_to_string(path).map_err(|source| WebError::ReadPasswordFile {
        path: path.to_owned(),
        source,
    })?;
    let hash = text.trim().to_owned();
    if PasswordHash::new(&hash).is_err() {
        return Err(WebError::BadPasswordFile {
            path: path.to_owned(),
        });
    }
    Ok(hash)
}

/// 32 random bytes as hex.
fn random_token() -> Result<String, openssl::error::ErrorStack> {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[derive(Debug)]
struct Session {
    csrf: String,
    last_used: Instant,
}

/// A new session's tokens.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The cookie value.
    pub token: String,
    /// The CSRF token.
    pub csrf: String,
}

/// The password hash and the open sessions.
#[derive(Debug)]
pub struct Auth {
    hash: String,
    secure_cookie: bool,
    sessions: Mutex<HashMap<String, Session>>,
    /// Serialises failed-login delays so guesses cannot run in parallel.
    pub failed_login: tokio::sync::Mutex<()>,
}

impl Auth {
    /// Sessions for the password `hash`; `secure_cookie` adds `Secure` to the cookie.
    pub fn new(hash: String, secure_cookie: bool) -> Self {
        Self {
            hash,
            secure_cookie,
            sessions: Mutex::new(HashMap::new()),
            failed_login: tokio::sync::Mutex::new(()),
        }
    }

    /// The stored hash (for verification on a blocking thread).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Opens a session.
    pub fn open(&self) -> Result<NewSession, openssl::error::ErrorStack> {
        let new = NewSession {
            token: random_token()?,
            csrf: random_token()?,
        };
        let mut sessions = self.lock();
        let now = Instant::now();
        sessions.retain(|_, s| now.duration_since(s.last_used) < IDLE_TIMEOUT);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            new.token.clone(),
            Session {
                csrf: new.csrf.clone(),
                last_used: now,
            },
        );
        Ok(new)
    }

    /// The CSRF token of the live session `token` (refreshing its idle timer), if any.
    pub fn touch(&self, token: &str) -> Option<String> {
        let mut sessions = self.lock();
        let now = Instant::now();
        match sessions.get_mut(token) {
            Some(s) if now.duration_since(s.last_used) < IDLE_TIMEOUT => {
                s.last_used = now;
                Some(s.csrf.clone())
            }
            Some(_) => {
                sessions.remove(token);
                None
            }
            None => None,
        }
    }

    /// Whether the session `token` is still open (without refreshing its idle timer): a
    /// long-lived stream checks this so it ends with the session (logout, expiry).
    pub fn alive(&self, token: &str) -> bool {
        self.lock()
            .get(token)
            .is_some_and(|s| s.last_used.elapsed() < IDLE_TIMEOUT)
    }

    /// Ends the session `token`.
    pub fn close(&self, token: &str) {
        self.lock().remove(token);
    }

    /// The `Set-Cookie` value for a new session.
    pub fn cookie(&self, token: &str) -> String {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/{secure}")
    }

    /// The `Set-Cookie` value that removes the cookie.
    pub fn removal_cookie(&self) -> String {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic aborts the process (panic = "abort"), so the lock cannot be poisoned in use.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Constant-time comparison of two tokens.
pub fn tokens_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a.as_bytes(), b.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_files_are_private() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("pw");
        write_password_file(&path, "s3cret").unwrap_or_else(|e| panic!("{e}"));
        let mode = fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).ok();
        assert_eq!(mode, Some(0o600));
        let hash = read_password_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "s3cret"));
        assert!(!verify_password(&hash, "s3cre"));
        assert!(matches!(
            write_password_file(&path, ""),
            Err(WebError::EmptyPassword)
        ));
    }

    #[test]
    fn sessions_open_touch_and_close() {
        let auth = Auth::new(String::new(), false);
        let s = auth.open().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.token.len(), 64);
        assert_eq!(auth.touch(&s.token).as_deref(), Some(s.csrf.as_str()));
        assert!(
            auth.cookie(&s.token)
                .contains("HttpOnly; SameSite=Strict; Path=/")
        );
        auth.close(&s.token);
        assert_eq!(auth.touch(&s.token), None);
        assert!(tokens_equal("ab", "ab") && !tokens_equal("ab", "ac") && !tokens_equal("a", "ab"));
    }
}

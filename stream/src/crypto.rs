//! Encryption at rest: a keyring of AES-256-GCM key-encryption keys (KEKs), each with an id,
//! and the sealed blobs they protect.
//!
//! Envelope encryption, the way Parquet's key tools (and every KMS) do it: each snapshot
//! object gets its own random 256-bit data key (DEK) for Parquet modular encryption (see
//! [`crate::store`]), and the DEK is kept *sealed* — AES-256-GCM under the keyring's active
//! KEK — in a small record whose header names the KEK's id. Model weights are sealed the same
//! way. Rotation:
//!
//! 1. `driftwood keys add` puts a new KEK in the keyring and makes it active: new data is
//!    sealed with it, old data stays readable with the old one;
//! 2. `driftwood keys rewrap` re-seals every DEK record and weights file under the active KEK;
//!    afterwards the old KEK can be removed. Snapshot objects themselves never change, so
//!    their content addresses and every version id stay the same.
//!
//! All cryptography is `ring`'s (AES-256-GCM, the system RNG) and Parquet's own modular
//! encryption; nothing here is hand-rolled beyond the byte layout of a sealed blob:
//!
//! ```text
//!  "DWSEAL01" | id length (1 byte) | KEK id | nonce (12 bytes) | ciphertext | GCM tag (16 bytes)
//! ```
//!
//! The header and a caller-chosen context (what the blob is, e.g. the DEK id) are the GCM
//! associated data, so a blob cannot be moved to another context or relabelled with another
//! key id without failing authentication.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use schemas::config::EncryptionConfig;

use crate::{Error, Result};

/// Length of every key (AES-256).
pub const KEY_LEN: usize = 32;
/// The environment variable that may carry the keyring's TOML text.
pub const KEYS_ENV: &str = "DRIFTWOOD_ENCRYPTION_KEYS";

const MAGIC: &[u8; 8] = b"DWSEAL01";
const TAG_LEN: usize = 16;

/// One key-encryption key.
struct Kek {
    bytes: [u8; KEY_LEN],
    key: LessSafeKey,
}

/// The key-encryption keys, by id, and which one seals new data. Debug shows ids only.
pub struct Keyring {
    active: String,
    keys: BTreeMap<String, Kek>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The keyring file: `active = "<id>"` and a `[keys]` table of base64 keys.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    active: String,
    keys: BTreeMap<String, String>,
}

impl Keyring {
    /// The keyring of `config`: from its key file, else from [`KEYS_ENV`] (`env`, passed in by
    /// the caller); `None` when neither is set (no encryption).
    pub fn load(config: &EncryptionConfig, env: Option<String>) -> Result<Option<Keyring>> {
        if !config.key_file.is_empty() {
            let path = Path::new(&config.key_file);
            let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
            return Keyring::parse(&text, &config.key_file).map(Some);
        }
        match env {
            Some(text) if !text.trim().is_empty() => Keyring::parse(&text, KEYS_ENV).map(Some),
            _ => Ok(None),
        }
    }

    /// Parses a keyring's TOML text; `origin` names it in errors (never the key material).
    pub fn parse(text: &str, origin: &str) -> Result<Keyring> {
        let file: KeyringFile = toml::from_str(text)
            .map_err(|e| Error::Key(format!("{origin} is not a keyring: {}", e.message())))?;
        let mut keys = BTreeMap::new();
        for (id, encoded) in &file.keys {
            check_id(id)?;
            let bytes = B64
                .decode(encoded.trim())
                .map_err(|_| Error::Key(format!("{origin}: key `{id}` is not base64")))?;
            let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
                Error::Key(format!("{origin}: key `{id}` has {} bytes, AES-256 needs {KEY_LEN}", b.len()))
            })?;
            keys.insert(id.clone(), Kek::new(bytes));
        }
        if !keys.contains_key(&file.active) {
            return Err(Error::Key(format!("{origin}: the active key `{}` is not in [keys]", file.active)));
        }
        Ok(Keyring { active: file.active, keys })
    }

    /// The keyring as its file's TOML text (this *is* the secret: write it with mode 0600).
    pub fn to_toml(&self) -> String {
        let file = KeyringFile {
            active: self.active.clone(),
            keys: self.keys.iter().map(|(id, k)| (id.clone(), B64.encode(k.bytes))).collect(),
        };
        let body = toml::to_string(&file).expect("a keyring always serializes");
        format!("# Driftwood keyring: AES-256 key-encryption keys. Secret; never commit it.\n{body}")
    }

    /// A keyring with one new random key, `id`, active.
    pub fn generate(id: &str) -> Result<Keyring> {
        check_id(id)?;
        Ok(Keyring { active: id.to_string(), keys: BTreeMap::from([(id.to_string(), Kek::new(random()?))]) })
    }

    /// Adds a new random key `id` and makes it the active one.
    pub fn add(&mut self, id: &str) -> Result<()> {
        check_id(id)?;
        if self.keys.contains_key(id) {
            return Err(Error::Key(format!("key `{id}` is already in the keyring")));
        }
        self.keys.insert(id.to_string(), Kek::new(random()?));
        self.active = id.to_string();
        Ok(())
    }

    /// Removes key `id` (not the active one). Data still sealed by it becomes unreadable:
    /// rewrap first.
    pub fn remove(&mut self, id: &str) -> Result<()> {
        if id == self.active {
            return Err(Error::Key(format!("key `{id}` is active; add another key before removing it")));
        }
        self.keys.remove(id).map(|_| ()).ok_or_else(|| Error::Key(format!("no key `{id}` in the keyring")))
    }

    /// Writes the keyring to `path` atomically (temp file, fsync, rename), readable by its
    /// owner only.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("keys");
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(Error::io(&tmp))?;
        f.write_all(self.to_toml().as_bytes()).and_then(|()| f.sync_all()).map_err(Error::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(Error::io(path))
    }

    pub fn active(&self) -> &str {
        &self.active
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Seals `plaintext` with the active key; `context` (what it is) must be given again to
    /// open it.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>> {
        let kek = &self.keys[&self.active];
        let nonce: [u8; NONCE_LEN] = random()?;
        let mut out =
            Vec::with_capacity(MAGIC.len() + 1 + self.active.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(u8::try_from(self.active.len()).expect("ids are at most 64 bytes"));
        out.extend_from_slice(self.active.as_bytes());
        out.extend_from_slice(&nonce);
        let header_len = out.len();
        let mut body = plaintext.to_vec();
        let aad = [context, &out[..header_len]].concat();
        kek.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
            .map_err(|_| Error::Key("sealing failed".into()))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a blob sealed by [`Keyring::seal`] with the same `context`. A wrong key, another
    /// context or any changed byte is an error, never garbage.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>> {
        let header = Header::parse(sealed)?;
        let kek = self.keys.get(header.key_id).ok_or_else(|| {
            Error::Key(format!(
                "sealed with key `{}`, which is not in the keyring (keys: {})",
                header.key_id,
                self.ids().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let nonce: [u8; NONCE_LEN] =
            sealed[header.len - NONCE_LEN..header.len].try_into().expect("checked length");
        let aad = [context, &sealed[..header.len]].concat();
        let mut body = sealed[header.len..].to_vec();
        let plain = kek
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
            .map_err(|_| {
                Error::Key(format!(
                    "authentication failed with key `{}`: the data was altered, or was sealed for something else",
                    header.key_id
                ))
            })?;
        Ok(plain.to_vec())
    }
}

/// The id of the key that sealed `sealed`, if it is a sealed blob.
pub fn sealed_by(sealed: &[u8]) -> Option<&str> {
    Header::parse(sealed).ok().map(|h| h.key_id)
}

/// Whether `bytes` start like a sealed blob.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// `N` bytes from the system's secure RNG.
pub fn random<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).map_err(|_| Error::Key("the system RNG failed".into()))?;
    Ok(out)
}

impl Kek {
    fn new(bytes: [u8; KEY_LEN]) -> Kek {
        let key =
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).expect("32 bytes is an AES-256 key"));
        Kek { bytes, key }
    }
}

/// The configured key file (`keys add` and `keys remove` edit it).
pub fn key_file(config: &EncryptionConfig) -> Result<&Path> {
    if config.key_file.is_empty() {
        return Err(Error::Key(
            "set [encryption] key_file (DRIFTWOOD_ENCRYPTION_KEY_FILE) to where the keyring lives".into(),
        ));
    }
    Ok(Path::new(&config.key_file))
}

/// `keys add`: a new random key `id`, made active, in the key file (created with only that key
/// when missing). Returns the file's path.
pub fn add_to_key_file<'a>(config: &'a EncryptionConfig, id: &str) -> Result<&'a Path> {
    let path = key_file(config)?;
    let keyring = if path.exists() {
        let mut k = Keyring::load(config, None)?.expect("the key file is set");
        k.add(id)?;
        k
    } else {
        Keyring::generate(id)?
    };
    keyring.save(path)?;
    Ok(path)
}

/// `keys remove`: key `id` (not the active one) out of the key file. The caller checks first
/// that nothing is still sealed by it.
pub fn remove_from_key_file<'a>(config: &'a EncryptionConfig, id: &str) -> Result<&'a Path> {
    let path = key_file(config)?;
    let mut keyring = Keyring::load(config, None)?.expect("the key file is set");
    keyring.remove(id)?;
    keyring.save(path)?;
    Ok(path)
}

struct Header<'a> {
    key_id: &'a str,
    /// Bytes up to and including the nonce.
    len: usize,
}

impl<'a> Header<'a> {
    fn parse(sealed: &'a [u8]) -> Result<Header<'a>> {
        let not = || Error::Key("not a sealed blob (or truncated)".into());
        if !is_sealed(sealed) || sealed.len() <= MAGIC.len() {
            return Err(not());
        }
        let id_len = usize::from(sealed[MAGIC.len()]);
        let len = MAGIC.len() + 1 + id_len + NONCE_LEN;
        if sealed.len() < len + TAG_LEN {
            return Err(not());
        }
        let key_id =
            std::str::from_utf8(&sealed[MAGIC.len() + 1..MAGIC.len() + 1 + id_len]).map_err(|_| not())?;
        Ok(Header { key_id, len })
    }
}

/// Key ids: 1–64 of `[A-Za-z0-9_.-]` (they name keys in files and logs).
fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err(Error::Key(format!("`{id}` is not a key id (1-64 of A-Z a-z 0-9 _ . -)"))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_created_edited_and_kept_owner_only() -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets/keys.toml");
        let config = EncryptionConfig { key_file: path.display().to_string() };
        assert!(key_file(&EncryptionConfig { key_file: String::new() }).is_err());
        assert!(remove_from_key_file(&config, "k1").is_err(), "no file yet");
        add_to_key_file(&config, "k1")?;
        let sealed = Keyring::load(&config, None)?.expect("written").seal(b"data", b"ctx")?;
        add_to_key_file(&config, "k2")?;
        let ring = Keyring::load(&config, None)?.expect("written");
        assert_eq!((ring.active(), ring.ids().collect::<Vec<_>>()), ("k2", vec!["k1", "k2"]));
        assert_eq!(ring.open(&sealed, b"ctx")?, b"data", "adding keeps the old key");
        assert!(add_to_key_file(&config, "k2").is_err(), "ids are unique");
        assert!(remove_from_key_file(&config, "k2").is_err(), "the active key stays");
        remove_from_key_file(&config, "k1")?;
        let ring = Keyring::load(&config, None)?.expect("written");
        assert_eq!(ring.ids().collect::<Vec<_>>(), vec!["k2"]);
        assert!(ring.open(&sealed, b"ctx").is_err());
        let mode = std::fs::metadata(&path).map_err(Error::io(&path))?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .map_err(Error::io(&path))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(Error::io(&path))?;
        assert_eq!(left, vec![std::ffi::OsString::from("keys.toml")], "no temp file left");
        Ok(())
    }

    #[test]
    fn seal_open_and_every_way_to_fail() {
        let ring = Keyring::generate("k1").unwrap();
        let sealed = ring.seal(b"the secret text", b"ctx").unwrap();
        assert_eq!(sealed_by(&sealed), Some("k1"));
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(ring.open(&sealed, b"ctx").unwrap(), b"the secret text");
        // Another context, a flipped byte anywhere (header, nonce, body, tag), a truncation.
        assert!(ring.open(&sealed, b"other").is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(ring.open(&bad, b"ctx").is_err(), "flipping byte {i} went unnoticed");
        }
        assert!(ring.open(&sealed[..sealed.len() - 1], b"ctx").is_err());
        // Another keyring whose key has the same id is the wrong key.
        let other = Keyring::generate("k1").unwrap();
        let err = other.open(&sealed, b"ctx").unwrap_err().to_string();
        assert!(err.contains("authentication failed"), "{err}");
    }

    #[test]
    fn rotation_keeps_old_blobs_readable_until_the_old_key_is_removed() {
        let mut ring = Keyring::generate("k1").unwrap();
        let old = ring.seal(b"old", b"c").unwrap();
        ring.add("k2").unwrap();
        let new = ring.seal(b"new", b"c").unwrap();
        assert_eq!((sealed_by(&old), sealed_by(&new)), (Some("k1"), Some("k2")));
        assert_eq!(ring.open(&old, b"c").unwrap(), b"old");
        // Through its file form and back.
        let mut reread = Keyring::parse(&ring.to_toml(), "test").unwrap();
        assert_eq!(reread.active(), "k2");
        assert_eq!(reread.open(&old, b"c").unwrap(), b"old");
        assert!(reread.remove("k2").is_err(), "the active key cannot go");
        reread.remove("k1").unwrap();
        let err = reread.open(&old, b"c").unwrap_err().to_string();
        assert!(err.contains("`k1`, which is not in the keyring"), "{err}");
        assert_eq!(reread.open(&new, b"c").unwrap(), b"new");
    }

    #[test]
    fn bad_keyrings_are_refused_without_echoing_keys() {
        let short = B64.encode([7u8; 16]);
        let err = Keyring::parse(&format!("active = \"a\"\n[keys]\na = \"{short}\"\n"), "f").unwrap_err();
        assert!(err.to_string().contains("has 16 bytes"), "{err}");
        assert!(!err.to_string().contains(&short));
        let key = B64.encode([7u8; 32]);
        let err = Keyring::parse(&format!("active = \"b\"\n[keys]\na = \"{key}\"\n"), "f").unwrap_err();
        assert!(err.to_string().contains("active key `b`"), "{err}");
        assert!(Keyring::parse(&format!("active = \"a b\"\n[keys]\n\"a b\" = \"{key}\"\n"), "f").is_err());
        let ring = Keyring::parse(&format!("active = \"a\"\n[keys]\na = \"{key}\"\n"), "f").unwrap();
        assert!(!format!("{ring:?}").contains(&key));
        assert!(Keyring::generate("k1").unwrap().add("k1").is_err());
    }
}

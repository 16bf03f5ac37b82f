//! smb.conf-syntax configuration. Option names are Samba's on purpose, so an
//! admin's existing knowledge (and most of an existing file) carries over.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Built-in configuration used when no file exists. Loopback only, so a fresh
/// install is not reachable from the network until an admin says so.
pub const DEFAULT_CONFIG: &str = "\
# Holdfast configuration (smb.conf syntax; option names follow Samba).
#
# This default listens on the loopback address only, so a fresh install is
# not reachable from other machines. To serve the network, list the addresses
# to listen on, for example:
#     interfaces = 192.168.1.10
# or every address:
#     interfaces = 0.0.0.0 ::
#
# Users live in Holdfast's own database (users.db in the state directory):
#     echo 'secret' | holdfastctl user add alice --password-stdin

[global]
\tinterfaces = 127.0.0.1
\tsmb ports = 445
\tstate directory = /var/lib/holdfast
\tserver signing = auto

[share]
\tcomment = Holdfast share
\tpath = /srv/holdfast/share
\tread only = no
";

/// A configuration error; always points at a line so the admin can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}line {line}: {message}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Invalid {
        path: Option<PathBuf>,
        line: usize,
        message: String,
    },
}

fn invalid(line: usize, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: None,
        line,
        message: message.into(),
    }
}

/// SMB2+ dialects, ordered so min/max comparisons work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dialect {
    Smb2_02,
    Smb2_10,
    Smb3_00,
    Smb3_02,
    Smb3_11,
}

impl Dialect {
    /// The DialectRevision value sent on the wire (MS-SMB2 2.2.3).
    pub fn revision(self) -> u16 {
        match self {
            Dialect::Smb2_02 => 0x0202,
            Dialect::Smb2_10 => 0x0210,
            Dialect::Smb3_00 => 0x0300,
            Dialect::Smb3_02 => 0x0302,
            Dialect::Smb3_11 => 0x0311,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Smb2_02 => "SMB2_02",
            Dialect::Smb2_10 => "SMB2_10",
            Dialect::Smb3_00 => "SMB3_00",
            Dialect::Smb3_02 => "SMB3_02",
            Dialect::Smb3_11 => "SMB3_11",
        }
    }
}

/// Server signing policy. SMB2 has no "off": signing is always allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    Auto,
    Mandatory,
}

impl Signing {
    pub fn as_str(self) -> &'static str {
        match self {
            Signing::Auto => "auto",
            Signing::Mandatory => "mandatory",
        }
    }
}

/// Encryption policy, Samba's four levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encrypt {
    Off,
    IfRequired,
    Desired,
    Required,
}

impl Encrypt {
    pub fn as_str(self) -> &'static str {
        match self {
            Encrypt::Off => "off",
            Encrypt::IfRequired => "if_required",
            Encrypt::Desired => "desired",
            Encrypt::Required => "required",
        }
    }
}

/// What to do with a logon for an unknown user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapToGuest {
    Never,
    BadUser,
}

impl MapToGuest {
    pub fn as_str(self) -> &'static str {
        match self {
            MapToGuest::Never => "never",
            MapToGuest::BadUser => "bad user",
        }
    }
}

/// Share options given in [global]; they are the starting point of every share,
/// as in Samba.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareDefaults {
    pub read_only: bool,
    pub guest_ok: bool,
    pub browseable: bool,
    pub valid_users: Vec<String>,
    pub comment: String,
    pub smb_encrypt: Option<Encrypt>,
    pub kernel_oplocks: Option<bool>,
    pub posix_locking: Option<bool>,
    pub durable_handles: Option<bool>,
    /// "oplocks": grant exclusive and batch oplocks (and level II ones).
    pub oplocks: bool,
    /// "level2 oplocks": grant level II (shared read-caching) oplocks.
    pub level2_oplocks: bool,
}

impl Default for ShareDefaults {
    fn default() -> Self {
        ShareDefaults {
            read_only: true,
            guest_ok: false,
            browseable: true,
            valid_users: Vec::new(),
            comment: String::new(),
            smb_encrypt: None,
            kernel_oplocks: None,
            posix_locking: None,
            durable_handles: None,
            oplocks: true,
            level2_oplocks: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    /// "interfaces": canonical IP address text.
    pub interfaces: Vec<String>,
    /// "smb ports"
    pub smb_ports: Vec<u16>,
    /// "state directory"
    pub state_directory: PathBuf,
    /// "server min protocol"
    pub server_min_protocol: Dialect,
    /// "server max protocol"
    pub server_max_protocol: Dialect,
    /// "server signing"
    pub server_signing: Signing,
    /// "server smb encrypt"
    pub server_smb_encrypt: Encrypt,
    /// "log level": a Samba number 0-10 or a RUST_LOG-style filter.
    pub log_level: String,
    /// "netbios name"
    pub netbios_name: String,
    /// "workgroup"
    pub workgroup: String,
    /// "server string"
    pub server_string: String,
    /// "map to guest"
    pub map_to_guest: MapToGuest,
    /// "guest account"
    pub guest_account: String,
    /// "restrict anonymous": 0, 1 or 2.
    pub restrict_anonymous: u8,
    /// "oplock break timeout": seconds a conflicting open waits for the
    /// holder to acknowledge an oplock break (MS-SMB2 3.3.2.1, default 35).
    pub oplock_break_timeout: u32,
    /// "smb2 leases": offer SMB2.1+ leases (SMB2_GLOBAL_CAP_LEASING).
    pub smb2_leases: bool,
    /// "smb3 directory leases": offer directory leases on SMB 3.x.
    pub smb3_directory_leases: bool,
    /// "holdfast durable timeout": seconds a disconnected durable handle is
    /// kept for its client (v1 handles, and v2 handles that ask for 0).
    pub durable_timeout: u32,
    /// "holdfast durable max timeout": the most a v2 durable handle may ask
    /// for, in seconds.
    pub durable_max_timeout: u32,
    /// "holdfast keeper socket": the handle keeper's socket; None runs
    /// without a keeper (durable handles live only in the worker).
    pub keeper_socket: Option<PathBuf>,
    /// "holdfast workers": worker processes behind the supervisor (default:
    /// the number of CPUs); 0 serves every connection in the one process.
    pub workers: usize,
    /// "server multi channel support": advertise multichannel and accept
    /// session binding on 3.x connections.
    pub server_multi_channel_support: bool,
    pub limits: Limits,
    pub share_defaults: ShareDefaults,
}

/// Resource limits; each is answered with a status and a log line when hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// "smb2 max credits": most credits a client may hold on a connection.
    pub max_credits: u16,
    /// "holdfast max async operations": pending requests per connection.
    pub max_async: usize,
    /// "holdfast max compound requests": requests in one compound chain.
    pub max_compound: usize,
    /// "holdfast max sessions per connection"
    pub max_sessions_per_conn: usize,
    /// "holdfast max opens per session"
    pub max_opens_per_session: usize,
    /// "holdfast unauthenticated timeout": seconds a connection may live
    /// without a completed SESSION_SETUP (0 = no limit).
    pub unauth_timeout_secs: u64,
    /// "holdfast failed logon limit": failed logons from one address within
    /// the window that block it (0 = no limit).
    pub failed_logon_limit: u32,
    /// "holdfast failed logon window": seconds over which failures count.
    pub failed_logon_window_secs: u64,
    /// "holdfast failed logon lockout": seconds an address stays blocked.
    pub failed_logon_lockout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_credits: 8192,
            max_async: 512,
            max_compound: 128,
            max_sessions_per_conn: 64,
            max_opens_per_session: 16384,
            unauth_timeout_secs: 60,
            failed_logon_limit: 30,
            failed_logon_window_secs: 60,
            failed_logon_lockout_secs: 60,
        }
    }
}

/// One worker per CPU this process may run on (at most 256, the limit of
/// the option).
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(256))
}

impl Default for Global {
    fn default() -> Self {
        Global {
            interfaces: vec!["0.0.0.0".into(), "::".into()],
            smb_ports: vec![445],
            state_directory: PathBuf::from("/var/lib/holdfast"),
            server_min_protocol: Dialect::Smb2_02,
            server_max_protocol: Dialect::Smb3_11,
            server_signing: Signing::Auto,
            server_smb_encrypt: Encrypt::IfRequired,
            log_level: "2".into(),
            netbios_name: default_netbios_name(),
            workgroup: "WORKGROUP".into(),
            server_string: "Holdfast".into(),
            map_to_guest: MapToGuest::Never,
            guest_account: "nobody".into(),
            restrict_anonymous: 0,
            oplock_break_timeout: 35,
            smb2_leases: true,
            smb3_directory_leases: true,
            durable_timeout: 60,
            durable_max_timeout: 300,
            keeper_socket: None,
            workers: default_workers(),
            server_multi_channel_support: true,
            limits: Limits::default(),
            share_defaults: ShareDefaults::default(),
        }
    }
}

impl Global {
    /// The tracing filter for "log level": Samba numbers are mapped to levels,
    /// anything else is used as a RUST_LOG-style directive.
    pub fn tracing_filter(&self) -> String {
        match samba_log_number(&self.log_level) {
            Some(n) => level_for_number(n).to_string(),
            None => self.log_level.clone(),
        }
    }

    /// Every address x port pair to listen on.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for iface in &self.interfaces {
            if let Ok(ip) = iface.parse::<IpAddr>() {
                for &port in &self.smb_ports {
                    out.push(SocketAddr::new(ip, port));
                }
            }
        }
        out
    }
}

fn level_for_number(n: u8) -> &'static str {
    match n {
        0 => "error",
        1 => "warn",
        2 | 3 => "info",
        4..=9 => "debug",
        _ => "trace",
    }
}

/// Samba's "log level" may be "3" or "3 auth:5 passdb:2"; the leading number is
/// the one that matters to us.
fn samba_log_number(value: &str) -> Option<u8> {
    let first = value.split_whitespace().next()?;
    first.parse::<u8>().ok().filter(|n| *n <= 10)
}

fn default_netbios_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim().split('.').next().unwrap_or("").to_uppercase();
    let name: String = host.chars().take(15).collect();
    if name.is_empty() {
        "HOLDFAST".into()
    } else {
        name
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareConfig {
    /// Case preserved for display; lookups are case-insensitive.
    pub name: String,
    pub path: PathBuf,
    pub read_only: bool,
    pub guest_ok: bool,
    /// Empty means everybody.
    pub valid_users: Vec<String>,
    pub comment: String,
    pub browseable: bool,
    /// None: only the server-wide "server smb encrypt" applies.
    pub smb_encrypt: Option<Encrypt>,
    pub kernel_oplocks: Option<bool>,
    pub posix_locking: Option<bool>,
    pub durable_handles: Option<bool>,
    pub oplocks: bool,
    pub level2_oplocks: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub global: Global,
    pub shares: Vec<ShareConfig>,
}

/// One `name = value` line after folding.
struct Assignment {
    line: usize,
    name: String,
    value: String,
}

struct Section {
    name: String,
    line: usize,
    options: Vec<Assignment>,
}

/// Option names are case-insensitive and internal whitespace does not matter.
fn fold_name(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// Joins continuation lines and yields (first line number, logical line).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let raw = raw.trim_end_matches('\r');
        let (start, mut buf) = match pending.take() {
            Some(p) => p,
            None => {
                let t = raw.trim_start();
                if t.starts_with('#') || t.starts_with(';') {
                    continue;
                }
                (lineno, String::new())
            }
        };
        let trimmed = raw.trim_end();
        if let Some(head) = trimmed.strip_suffix('\\') {
            buf.push_str(head);
            pending = Some((start, buf));
        } else {
            buf.push_str(raw);
            out.push((start, buf));
        }
    }
    if let Some(p) = pending {
        out.push(p);
    }
    out
}

fn split_sections(text: &str, warnings: &mut Vec<String>) -> Result<Vec<Section>, ConfigError> {
    let mut sections: Vec<Section> = Vec::new();
    for (line, content) in logical_lines(text) {
        let t = content.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(rest) = t.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(invalid(
                    line,
                    format!("section header {t:?} has no closing ']'"),
                ));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(invalid(line, "empty section name"));
            }
            sections.push(Section {
                name: name.to_string(),
                line,
                options: Vec::new(),
            });
            continue;
        }
        let Some((name, value)) = t.split_once('=') else {
            return Err(invalid(
                line,
                format!("expected '[section]' or 'name = value', found {t:?}"),
            ));
        };
        let name = fold_name(name);
        if name.is_empty() {
            return Err(invalid(line, "option name missing before '='"));
        }
        if sections.is_empty() {
            warnings.push(format!(
                "line {line}: option \"{name}\" before any section header is treated as [global]"
            ));
            sections.push(Section {
                name: "global".into(),
                line,
                options: Vec::new(),
            });
        }
        sections
            .last_mut()
            .expect("pushed above")
            .options
            .push(Assignment {
                line,
                name,
                value: value.trim().to_string(),
            });
    }
    Ok(sections)
}

fn bad_value(a: &Assignment, section: &str, expected: &str) -> ConfigError {
    invalid(
        a.line,
        format!(
            "invalid value {:?} for \"{}\" in [{section}]: expected {expected}",
            a.value, a.name
        ),
    )
}

/// A whole number within `min..=max`.
fn parse_limit(a: &Assignment, section: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    match a.value.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(bad_value(
            a,
            section,
            &format!("a whole number from {min} to {max}"),
        )),
    }
}

fn parse_bool(a: &Assignment, section: &str) -> Result<bool, ConfigError> {
    match a.value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" | "on" => Ok(true),
        "no" | "false" | "0" | "off" => Ok(false),
        _ => Err(bad_value(a, section, "a boolean (yes/no)")),
    }
}

fn parse_encrypt(a: &Assignment, section: &str) -> Result<Encrypt, ConfigError> {
    // Synonyms follow Samba's shared signing/encryption value table.
    match a.value.to_ascii_lowercase().as_str() {
        "off" | "no" | "false" | "0" | "disabled" => Ok(Encrypt::Off),
        "if_required" | "auto" | "default" | "yes" | "true" | "1" | "on" | "enabled" => {
            Ok(Encrypt::IfRequired)
        }
        "desired" => Ok(Encrypt::Desired),
        "required" | "mandatory" | "force" | "forced" | "enforced" => Ok(Encrypt::Required),
        _ => Err(bad_value(
            a,
            section,
            "off, if_required, desired or required",
        )),
    }
}

fn parse_dialect(a: &Assignment, section: &str, is_min: bool) -> Result<Dialect, ConfigError> {
    let v = a.value.to_ascii_uppercase();
    let d = match v.as_str() {
        "SMB2_02" => Dialect::Smb2_02,
        "SMB2_10" => Dialect::Smb2_10,
        "SMB3_00" => Dialect::Smb3_00,
        "SMB3_02" => Dialect::Smb3_02,
        "SMB3_11" => Dialect::Smb3_11,
        // A family name means "anything in the family", so it widens the range.
        "SMB2" if is_min => Dialect::Smb2_02,
        "SMB2" => Dialect::Smb2_10,
        "SMB3" if is_min => Dialect::Smb3_00,
        "SMB3" => Dialect::Smb3_11,
        "DEFAULT" if is_min => Dialect::Smb2_02,
        "DEFAULT" => Dialect::Smb3_11,
        "NT1" | "LANMAN1" | "LANMAN2" | "CORE" | "COREPLUS" => {
            return Err(invalid(
                a.line,
                format!(
                    "\"{}\" = {}: SMB1 is not supported (use SMB2_02 or later)",
                    a.name, a.value
                ),
            ))
        }
        _ => {
            return Err(bad_value(
                a,
                section,
                "SMB2_02, SMB2_10, SMB3_00, SMB3_02, SMB3_11, SMB2 or SMB3",
            ))
        }
    };
    Ok(d)
}

/// Splits a list on commas and whitespace; double quotes keep a name with
/// spaces together.
fn parse_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => push_token(&mut out, &mut cur),
            c if c.is_whitespace() && !quoted => push_token(&mut out, &mut cur),
            c => cur.push(c),
        }
    }
    push_token(&mut out, &mut cur);
    out
}

fn push_token(out: &mut Vec<String>, cur: &mut String) {
    if !cur.is_empty() {
        out.push(std::mem::take(cur));
    }
}

fn render_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| {
            if s.contains(|c: char| c.is_whitespace() || c == ',') {
                format!("\"{s}\"")
            } else {
                s.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_interface(a: &Assignment, token: &str) -> Result<String, ConfigError> {
    let bare = token
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(token);
    // Samba allows "address/prefix"; we bind the address itself.
    let addr = bare.split_once('/').map(|(a, _)| a).unwrap_or(bare);
    let addr = addr
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(addr);
    match addr.parse::<IpAddr>() {
        Ok(ip) => Ok(ip.to_string()),
        Err(_) => Err(invalid(
            a.line,
            format!(
                "\"interfaces\": {token:?} is not an IP address (interface names are not supported; list the addresses to listen on)"
            ),
        )),
    }
}

fn parse_name15(a: &Assignment, section: &str) -> Result<String, ConfigError> {
    let v = a.value.to_uppercase();
    if v.is_empty() || v.chars().count() > 15 {
        return Err(bad_value(a, section, "1 to 15 characters"));
    }
    Ok(v)
}

/// Applies a share-level option to `d`. Returns false if `a` is not one.
fn apply_share_option(
    d: &mut ShareDefaults,
    a: &Assignment,
    section: &str,
) -> Result<bool, ConfigError> {
    match a.name.as_str() {
        "read only" => d.read_only = parse_bool(a, section)?,
        "writeable" | "writable" | "write ok" => d.read_only = !parse_bool(a, section)?,
        "guest ok" | "public" => d.guest_ok = parse_bool(a, section)?,
        "browseable" | "browsable" => d.browseable = parse_bool(a, section)?,
        "valid users" => d.valid_users = parse_list(&a.value),
        "comment" => d.comment = a.value.clone(),
        "smb encrypt" => d.smb_encrypt = Some(parse_encrypt(a, section)?),
        "kernel oplocks" => d.kernel_oplocks = Some(parse_bool(a, section)?),
        "posix locking" => d.posix_locking = Some(parse_bool(a, section)?),
        "durable handles" => d.durable_handles = Some(parse_bool(a, section)?),
        "oplocks" => d.oplocks = parse_bool(a, section)?,
        "level2 oplocks" => d.level2_oplocks = parse_bool(a, section)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// Applies a global-only option. Returns false if `a` is not one.
fn apply_global_option(
    g: &mut Global,
    a: &Assignment,
    warnings: &mut Vec<String>,
) -> Result<bool, ConfigError> {
    const S: &str = "global";
    match a.name.as_str() {
        "interfaces" => {
            let mut list = Vec::new();
            for tok in parse_list(&a.value) {
                let ip = parse_interface(a, &tok)?;
                if !list.contains(&ip) {
                    list.push(ip);
                }
            }
            if list.is_empty() {
                return Err(bad_value(a, S, "at least one IP address"));
            }
            g.interfaces = list;
        }
        "smb ports" => {
            let mut ports = Vec::new();
            for tok in parse_list(&a.value) {
                match tok.parse::<u16>() {
                    Ok(p) if p != 0 => {
                        if !ports.contains(&p) {
                            ports.push(p)
                        }
                    }
                    _ => return Err(bad_value(a, S, "port numbers 1-65535")),
                }
            }
            if ports.is_empty() {
                return Err(bad_value(a, S, "at least one port number"));
            }
            g.smb_ports = ports;
        }
        "holdfast workers" => {
            g.workers = match a.value.trim().parse::<usize>() {
                Ok(n) if n <= 256 => n,
                _ => return Err(bad_value(a, S, "a number of worker processes, 0-256")),
            }
        }
        "state directory" => {
            let p = PathBuf::from(&a.value);
            if !p.is_absolute() {
                return Err(bad_value(a, S, "an absolute path"));
            }
            g.state_directory = p;
        }
        "server min protocol" | "min protocol" => {
            g.server_min_protocol = parse_dialect(a, S, true)?
        }
        "server max protocol" | "max protocol" | "protocol" => {
            g.server_max_protocol = parse_dialect(a, S, false)?
        }
        "server signing" => {
            g.server_signing = match a.value.to_ascii_lowercase().as_str() {
                "auto" | "default" | "if_required" | "desired" | "yes" | "true" | "1" | "on"
                | "enabled" => Signing::Auto,
                "mandatory" | "required" | "force" | "forced" | "enforced" => {
                    Signing::Mandatory
                }
                "disabled" | "no" | "false" | "0" | "off" => {
                    warnings.push(format!(
                        "line {}: \"server signing = {}\": SMB2 signing cannot be disabled; using auto",
                        a.line, a.value
                    ));
                    Signing::Auto
                }
                _ => return Err(bad_value(a, S, "auto or mandatory")),
            }
        }
        "server smb encrypt" => g.server_smb_encrypt = parse_encrypt(a, S)?,
        "log level" | "debuglevel" => {
            let v = a.value.trim();
            if let Some(n) = samba_log_number(v) {
                if v.split_whitespace().nth(1).is_some() {
                    warnings.push(format!(
                        "line {}: \"log level\": per-class levels are ignored, using {n}",
                        a.line
                    ));
                }
            } else if v.is_empty()
                || tracing_subscriber::EnvFilter::builder()
                    .parse(v)
                    .is_err()
            {
                return Err(bad_value(
                    a,
                    S,
                    "a number 0-10 or a RUST_LOG-style filter",
                ));
            }
            g.log_level = v.to_string();
        }
        "netbios name" => g.netbios_name = parse_name15(a, S)?,
        "workgroup" => g.workgroup = parse_name15(a, S)?,
        "server string" => g.server_string = a.value.clone(),
        "map to guest" => {
            g.map_to_guest = match fold_name(&a.value).as_str() {
                "never" => MapToGuest::Never,
                "bad user" => MapToGuest::BadUser,
                _ => return Err(bad_value(a, S, "never or bad user")),
            }
        }
        "guest account" => {
            if a.value.is_empty() {
                return Err(bad_value(a, S, "a Unix user name"));
            }
            g.guest_account = a.value.clone();
        }
        "restrict anonymous" => {
            g.restrict_anonymous = match a.value.as_str() {
                "0" => 0,
                "1" => 1,
                "2" => 2,
                _ => return Err(bad_value(a, S, "0, 1 or 2")),
            }
        }
        "oplock break timeout" => {
            g.oplock_break_timeout = match a.value.trim().parse::<u32>() {
                Ok(n) if (1..=3600).contains(&n) => n,
                _ => return Err(bad_value(a, S, "seconds, 1-3600")),
            }
        }
        "smb2 leases" => g.smb2_leases = parse_bool(a, S)?,
        "smb3 directory leases" => g.smb3_directory_leases = parse_bool(a, S)?,
        "holdfast durable timeout" => {
            g.durable_timeout = match a.value.trim().parse::<u32>() {
                Ok(n) if (1..=86_400).contains(&n) => n,
                _ => return Err(bad_value(a, S, "seconds, 1-86400")),
            }
        }
        "holdfast durable max timeout" => {
            g.durable_max_timeout = match a.value.trim().parse::<u32>() {
                Ok(n) if (1..=86_400).contains(&n) => n,
                _ => return Err(bad_value(a, S, "seconds, 1-86400")),
            }
        }
        "holdfast keeper socket" => {
            let v = a.value.trim();
            g.keeper_socket = if v.is_empty() {
                None
            } else if Path::new(v).is_absolute() {
                Some(PathBuf::from(v))
            } else {
                return Err(bad_value(a, S, "an absolute path, or empty for no keeper"));
            };
        }
        "server multi channel support" => g.server_multi_channel_support = parse_bool(a, S)?,
        "smb2 max credits" => {
            g.limits.max_credits = parse_limit(a, S, 1, 8192)? as u16;
        }
        "holdfast max async operations" => {
            g.limits.max_async = parse_limit(a, S, 1, 1 << 20)? as usize;
        }
        "holdfast max compound requests" => {
            g.limits.max_compound = parse_limit(a, S, 1, 65536)? as usize;
        }
        "holdfast max sessions per connection" => {
            g.limits.max_sessions_per_conn = parse_limit(a, S, 1, 1 << 20)? as usize;
        }
        "holdfast max opens per session" => {
            g.limits.max_opens_per_session = parse_limit(a, S, 1, 1 << 24)? as usize;
        }
        "holdfast unauthenticated timeout" => {
            g.limits.unauth_timeout_secs = parse_limit(a, S, 0, 86400)?;
        }
        "holdfast failed logon limit" => {
            g.limits.failed_logon_limit = parse_limit(a, S, 0, 1 << 20)? as u32;
        }
        "holdfast failed logon window" => {
            g.limits.failed_logon_window_secs = parse_limit(a, S, 1, 86400)?;
        }
        "holdfast failed logon lockout" => {
            g.limits.failed_logon_lockout_secs = parse_limit(a, S, 1, 86400)?;
        }
        "server role" => {
            let role = fold_name(&a.value);
            if !matches!(role.as_str(), "standalone" | "standalone server" | "auto") {
                warnings.push(format!(
                    "line {}: \"server role = {}\" is not supported; Holdfast is a standalone server",
                    a.line, a.value
                ));
            }
        }
        // We only ever bind the listed addresses and never speak NetBIOS, so
        // these booleans carry no information; still check the syntax.
        "bind interfaces only" | "disable netbios" | "load printers" => {
            parse_bool(a, S)?;
        }
        "passdb backend" => warnings.push(format!(
            "line {}: \"passdb backend\" is ignored: users live in Holdfast's own database (holdfastctl user)",
            a.line
        )),
        // Logs go to stderr/journald; printing is not supported at all.
        "printing" | "printcap name" | "log file" | "max log size" => {}
        _ => return Ok(false),
    }
    Ok(true)
}

fn is_global_section(name: &str) -> bool {
    name.eq_ignore_ascii_case("global") || name.eq_ignore_ascii_case("globals")
}

fn validate_share_name(name: &str, line: usize) -> Result<(), ConfigError> {
    if name.eq_ignore_ascii_case("IPC$") {
        return Err(invalid(
            line,
            "[IPC$] is reserved: the server provides it implicitly",
        ));
    }
    if name.chars().count() > 80 {
        return Err(invalid(
            line,
            format!("share name [{name}] is longer than 80 characters"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || "\\/[]:|<>+=;,*?\"".contains(*c))
    {
        return Err(invalid(
            line,
            format!("share name [{name}] contains the invalid character {c:?}"),
        ));
    }
    Ok(())
}

/// Parses smb.conf text. Warnings (unknown options, ignored sections) come
/// back alongside the config; anything that would make the server do
/// something other than what was written is an error.
pub fn parse(text: &str) -> Result<(Config, Vec<String>), ConfigError> {
    let mut warnings = Vec::new();
    let sections = split_sections(text, &mut warnings)?;

    // [global] first, wherever it appears: its share options are defaults for
    // every share, independent of order in the file.
    let mut global = Global::default();
    let mut protocol_line = 0;
    for sec in sections.iter().filter(|s| is_global_section(&s.name)) {
        for a in &sec.options {
            if a.name.ends_with("protocol") {
                protocol_line = a.line;
            }
            if apply_global_option(&mut global, a, &mut warnings)? {
                continue;
            }
            if apply_share_option(&mut global.share_defaults, a, "global")? {
                continue;
            }
            if a.name == "path" {
                warnings.push(format!(
                    "line {}: \"path\" in [global] is ignored; give each share its own path",
                    a.line
                ));
                continue;
            }
            warnings.push(format!(
                "line {}: unknown option \"{}\" in [global] ignored",
                a.line, a.name
            ));
        }
    }
    if global.server_min_protocol > global.server_max_protocol {
        return Err(invalid(
            protocol_line,
            format!(
                "\"server min protocol\" ({}) is higher than \"server max protocol\" ({})",
                global.server_min_protocol.as_str(),
                global.server_max_protocol.as_str()
            ),
        ));
    }

    let mut shares: Vec<(usize, ShareConfig)> = Vec::new();
    for sec in sections.iter().filter(|s| !is_global_section(&s.name)) {
        if sec.name.eq_ignore_ascii_case("homes") || sec.name.eq_ignore_ascii_case("printers") {
            warnings.push(format!(
                "line {}: [{}] is not supported; section ignored",
                sec.line, sec.name
            ));
            continue;
        }
        validate_share_name(&sec.name, sec.line)?;
        if let Some((first, _)) = shares
            .iter()
            .find(|(_, s)| s.name.to_lowercase() == sec.name.to_lowercase())
        {
            return Err(invalid(
                sec.line,
                format!(
                    "share [{}] is defined twice (first on line {first})",
                    sec.name
                ),
            ));
        }
        let mut d = global.share_defaults.clone();
        let mut path: Option<PathBuf> = None;
        for a in &sec.options {
            if apply_share_option(&mut d, a, &sec.name)? {
                continue;
            }
            if a.name == "path" || a.name == "directory" {
                let p = PathBuf::from(&a.value);
                if !p.is_absolute() {
                    return Err(bad_value(a, &sec.name, "an absolute path"));
                }
                path = Some(p);
                continue;
            }
            let mut scratch = Global::default();
            let mut scratch_warnings = Vec::new();
            // Probe on a scratch Global only to tell "global-only" from "unknown".
            if apply_global_option(&mut scratch, a, &mut scratch_warnings).unwrap_or(true) {
                warnings.push(format!(
                    "line {}: global option \"{}\" in share [{}] ignored",
                    a.line, a.name, sec.name
                ));
                continue;
            }
            warnings.push(format!(
                "line {}: unknown option \"{}\" in [{}] ignored",
                a.line, a.name, sec.name
            ));
        }
        let Some(path) = path else {
            return Err(invalid(
                sec.line,
                format!("share [{}] has no \"path\"", sec.name),
            ));
        };
        shares.push((
            sec.line,
            ShareConfig {
                name: sec.name.clone(),
                path,
                read_only: d.read_only,
                guest_ok: d.guest_ok,
                valid_users: d.valid_users,
                comment: d.comment,
                browseable: d.browseable,
                smb_encrypt: d.smb_encrypt,
                kernel_oplocks: d.kernel_oplocks,
                posix_locking: d.posix_locking,
                durable_handles: d.durable_handles,
                oplocks: d.oplocks,
                level2_oplocks: d.level2_oplocks,
            },
        ));
    }

    Ok((
        Config {
            global,
            shares: shares.into_iter().map(|(_, s)| s).collect(),
        },
        warnings,
    ))
}

/// Reads and parses a file; errors carry the path.
pub fn load(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|e| match e {
        ConfigError::Invalid { line, message, .. } => ConfigError::Invalid {
            path: Some(path.to_path_buf()),
            line,
            message,
        },
        other => other,
    })
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

struct Lines(String);

impl Lines {
    fn opt(&mut self, name: &str, value: impl fmt::Display) {
        use fmt::Write;
        let _ = writeln!(self.0, "\t{name} = {value}");
    }
}

impl Config {
    /// Case-insensitive share lookup, as clients expect.
    pub fn share(&self, name: &str) -> Option<&ShareConfig> {
        let lower = name.to_lowercase();
        self.shares.iter().find(|s| s.name.to_lowercase() == lower)
    }

    /// Every effective setting, defaults included, in smb.conf syntax (like
    /// `testparm`), so admins can see what the server actually uses.
    pub fn render_effective(&self) -> String {
        let g = &self.global;
        let mut out = Lines(String::from("[global]\n"));
        out.opt("interfaces", g.interfaces.join(" "));
        out.opt(
            "smb ports",
            g.smb_ports
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        );
        out.opt("state directory", g.state_directory.display());
        out.opt("holdfast workers", g.workers);
        out.opt("server min protocol", g.server_min_protocol.as_str());
        out.opt("server max protocol", g.server_max_protocol.as_str());
        out.opt("server signing", g.server_signing.as_str());
        out.opt("server smb encrypt", g.server_smb_encrypt.as_str());
        out.opt("log level", &g.log_level);
        out.opt("netbios name", &g.netbios_name);
        out.opt("workgroup", &g.workgroup);
        out.opt("server string", &g.server_string);
        out.opt("map to guest", g.map_to_guest.as_str());
        out.opt("guest account", &g.guest_account);
        out.opt("restrict anonymous", g.restrict_anonymous);
        out.opt("oplock break timeout", g.oplock_break_timeout);
        out.opt("smb2 leases", if g.smb2_leases { "yes" } else { "no" });
        out.opt(
            "smb3 directory leases",
            if g.smb3_directory_leases { "yes" } else { "no" },
        );
        out.opt("holdfast durable timeout", g.durable_timeout);
        out.opt("holdfast durable max timeout", g.durable_max_timeout);
        out.opt(
            "holdfast keeper socket",
            g.keeper_socket
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        );
        out.opt(
            "server multi channel support",
            if g.server_multi_channel_support {
                "yes"
            } else {
                "no"
            },
        );
        let l = &g.limits;
        out.opt("smb2 max credits", l.max_credits);
        out.opt("holdfast max async operations", l.max_async);
        out.opt("holdfast max compound requests", l.max_compound);
        out.opt(
            "holdfast max sessions per connection",
            l.max_sessions_per_conn,
        );
        out.opt("holdfast max opens per session", l.max_opens_per_session);
        out.opt("holdfast unauthenticated timeout", l.unauth_timeout_secs);
        out.opt("holdfast failed logon limit", l.failed_logon_limit);
        out.opt("holdfast failed logon window", l.failed_logon_window_secs);
        out.opt("holdfast failed logon lockout", l.failed_logon_lockout_secs);
        let d = &g.share_defaults;
        render_share_opts(
            &mut out,
            d.read_only,
            d.guest_ok,
            d.browseable,
            &d.valid_users,
            &d.comment,
            [
                ("smb encrypt", d.smb_encrypt.map(Encrypt::as_str)),
                ("kernel oplocks", d.kernel_oplocks.map(yes_no)),
                ("posix locking", d.posix_locking.map(yes_no)),
                ("durable handles", d.durable_handles.map(yes_no)),
                ("oplocks", Some(yes_no(d.oplocks))),
                ("level2 oplocks", Some(yes_no(d.level2_oplocks))),
            ],
        );
        for s in &self.shares {
            out.0.push_str(&format!("\n[{}]\n", s.name));
            out.opt("path", s.path.display());
            render_share_opts(
                &mut out,
                s.read_only,
                s.guest_ok,
                s.browseable,
                &s.valid_users,
                &s.comment,
                [
                    ("smb encrypt", s.smb_encrypt.map(Encrypt::as_str)),
                    ("kernel oplocks", s.kernel_oplocks.map(yes_no)),
                    ("posix locking", s.posix_locking.map(yes_no)),
                    ("durable handles", s.durable_handles.map(yes_no)),
                    ("oplocks", Some(yes_no(s.oplocks))),
                    ("level2 oplocks", Some(yes_no(s.level2_oplocks))),
                ],
            );
        }
        out.0
    }
}

fn render_share_opts(
    out: &mut Lines,
    read_only: bool,
    guest_ok: bool,
    browseable: bool,
    valid_users: &[String],
    comment: &str,
    optional: [(&str, Option<&str>); 6],
) {
    if !comment.is_empty() {
        out.opt("comment", comment);
    }
    out.opt("read only", yes_no(read_only));
    out.opt("guest ok", yes_no(guest_ok));
    out.opt("browseable", yes_no(browseable));
    if !valid_users.is_empty() {
        out.opt("valid users", render_list(valid_users));
    }
    for (name, value) in optional {
        if let Some(v) = value {
            out.opt(name, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> (Config, Vec<String>) {
        parse(text).unwrap_or_else(|e| panic!("parse failed: {e}"))
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("expected an error").to_string()
    }

    #[test]
    fn default_config_parses_cleanly() {
        let (c, w) = ok(DEFAULT_CONFIG);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.global.interfaces, vec!["127.0.0.1"]);
        assert_eq!(c.global.smb_ports, vec![445]);
        assert_eq!(c.global.state_directory, Path::new("/var/lib/holdfast"));
        assert_eq!(c.shares.len(), 1);
        assert_eq!(c.shares[0].name, "share");
        assert_eq!(c.shares[0].path, Path::new("/srv/holdfast/share"));
        assert!(!c.shares[0].read_only);
    }

    #[test]
    fn defaults_without_options() {
        let (c, w) = ok("[global]\n");
        assert!(w.is_empty());
        assert_eq!(c.global.interfaces, vec!["0.0.0.0", "::"]);
        assert_eq!(c.global.server_min_protocol, Dialect::Smb2_02);
        assert_eq!(c.global.server_max_protocol, Dialect::Smb3_11);
        assert_eq!(c.global.server_smb_encrypt, Encrypt::IfRequired);
        assert_eq!(c.global.workgroup, "WORKGROUP");
        assert!(!c.global.netbios_name.is_empty() && c.global.netbios_name.len() <= 15);
        assert_eq!(c.global.listen_addrs().len(), 2);
    }

    #[test]
    fn comments_continuations_and_case_folding() {
        let text = "# comment\n  ; another\n[Global]\n  Server   Signing = Mandatory  \n\
                    interfaces = 127.0.0.1 \\\n   ::1\n[Data]\nPATH=/srv/data\n\
                    # path = /not/this\ncomment = has # inside\n";
        let (c, w) = ok(text);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.global.server_signing, Signing::Mandatory);
        assert_eq!(c.global.interfaces, vec!["127.0.0.1", "::1"]);
        let s = c.share("data").unwrap();
        assert_eq!(s.name, "Data");
        assert_eq!(s.path, Path::new("/srv/data"));
        assert_eq!(s.comment, "has # inside");
    }

    #[test]
    fn booleans() {
        for (v, ro) in [
            ("yes", true),
            ("No", false),
            ("TRUE", true),
            ("false", false),
            ("1", true),
            ("0", false),
            ("on", true),
            ("OFF", false),
        ] {
            let (c, _) = ok(&format!("[s]\npath=/x\nread only = {v}\n"));
            assert_eq!(c.shares[0].read_only, ro, "{v}");
            let (c, _) = ok(&format!("[s]\npath=/x\nwriteable = {v}\n"));
            assert_eq!(c.shares[0].read_only, !ro, "{v}");
        }
        let e = err("[s]\npath=/x\nread only = maybe\n");
        assert!(e.contains("line 3") && e.contains("read only"), "{e}");
    }

    #[test]
    fn protocols() {
        let g = |t: &str| ok(&format!("[global]\n{t}\n")).0.global;
        assert_eq!(
            g("server min protocol = SMB3").server_min_protocol,
            Dialect::Smb3_00
        );
        assert_eq!(
            g("server max protocol = smb2").server_max_protocol,
            Dialect::Smb2_10
        );
        assert_eq!(
            g("server min protocol = SMB2").server_min_protocol,
            Dialect::Smb2_02
        );
        assert_eq!(
            g("server max protocol = SMB3").server_max_protocol,
            Dialect::Smb3_11
        );
        assert_eq!(
            g("server max protocol = SMB3_02").server_max_protocol,
            Dialect::Smb3_02
        );
        let e = err("[global]\nserver min protocol = NT1\n");
        assert!(
            e.contains("line 2") && e.contains("SMB1 is not supported"),
            "{e}"
        );
        let e = err("[global]\nserver max protocol = SMB4\n");
        assert!(e.contains("line 2"), "{e}");
        let e = err("[global]\nserver min protocol = SMB3_11\nserver max protocol = SMB3_00\n");
        assert!(e.contains("higher"), "{e}");
    }

    #[test]
    fn signing() {
        let p = |v: &str| parse(&format!("[global]\nserver signing = {v}\n"));
        assert_eq!(p("auto").unwrap().0.global.server_signing, Signing::Auto);
        assert_eq!(p("default").unwrap().0.global.server_signing, Signing::Auto);
        assert_eq!(
            p("required").unwrap().0.global.server_signing,
            Signing::Mandatory
        );
        assert_eq!(
            p("mandatory").unwrap().0.global.server_signing,
            Signing::Mandatory
        );
        let (c, w) = p("disabled").unwrap();
        assert_eq!(c.global.server_signing, Signing::Auto);
        assert!(w[0].contains("cannot be disabled"), "{w:?}");
        assert!(p("sometimes").is_err());
    }

    #[test]
    fn encryption() {
        let p = |v: &str| {
            ok(&format!("[global]\nserver smb encrypt = {v}\n"))
                .0
                .global
                .server_smb_encrypt
        };
        assert_eq!(p("off"), Encrypt::Off);
        assert_eq!(p("disabled"), Encrypt::Off);
        assert_eq!(p("auto"), Encrypt::IfRequired);
        assert_eq!(p("default"), Encrypt::IfRequired);
        assert_eq!(p("if_required"), Encrypt::IfRequired);
        assert_eq!(p("desired"), Encrypt::Desired);
        assert_eq!(p("mandatory"), Encrypt::Required);
        assert_eq!(p("forced"), Encrypt::Required);
        assert!(parse("[global]\nserver smb encrypt = lots\n").is_err());
        let (c, _) = ok("[s]\npath=/x\nsmb encrypt = required\n");
        assert_eq!(c.shares[0].smb_encrypt, Some(Encrypt::Required));
    }

    #[test]
    fn multichannel_and_limits() {
        let (c, _) = parse("[global]\n").unwrap();
        assert!(c.global.server_multi_channel_support);
        assert_eq!(c.global.limits, Limits::default());
        let (c, _) = parse(
            "[global]\nserver multi channel support = no\nsmb2 max credits = 128\n\
             holdfast max async operations = 4\nholdfast max compound requests = 8\n\
             holdfast max sessions per connection = 2\nholdfast max opens per session = 10\n\
             holdfast unauthenticated timeout = 0\nholdfast failed logon limit = 5\n\
             holdfast failed logon window = 30\nholdfast failed logon lockout = 90\n",
        )
        .unwrap();
        let l = &c.global.limits;
        assert!(!c.global.server_multi_channel_support);
        assert_eq!(
            (
                l.max_credits,
                l.max_async,
                l.max_compound,
                l.max_sessions_per_conn
            ),
            (128, 4, 8, 2)
        );
        assert_eq!(l.max_opens_per_session, 10);
        assert_eq!(l.unauth_timeout_secs, 0);
        assert_eq!(
            (
                l.failed_logon_limit,
                l.failed_logon_window_secs,
                l.failed_logon_lockout_secs
            ),
            (5, 30, 90)
        );
        let text = c.render_effective();
        assert!(text.contains("smb2 max credits = 128"), "{text}");
        assert!(text.contains("server multi channel support = no"), "{text}");
        assert!(parse("[global]\nsmb2 max credits = 0\n").is_err());
        assert!(parse("[global]\nsmb2 max credits = 9000\n").is_err());
        assert!(parse("[global]\nholdfast max compound requests = many\n").is_err());
        assert!(parse("[global]\nholdfast failed logon window = 0\n").is_err());
    }

    #[test]
    fn other_enums_and_log_level() {
        let (c, _) = ok(
            "[global]\nmap to guest = Bad  User\nrestrict anonymous = 2\nlog level = 3 auth:5\n",
        );
        assert_eq!(c.global.map_to_guest, MapToGuest::BadUser);
        assert_eq!(c.global.restrict_anonymous, 2);
        assert_eq!(c.global.tracing_filter(), "info");
        assert!(parse("[global]\nmap to guest = bad password\n").is_err());
        assert!(parse("[global]\nrestrict anonymous = 3\n").is_err());
        let (c, _) = ok("[global]\nlog level = holdfast_smbd=debug,warn\n");
        assert_eq!(c.global.tracing_filter(), "holdfast_smbd=debug,warn");
        let (c, _) = ok("[global]\nlog level = 10\n");
        assert_eq!(c.global.tracing_filter(), "trace");
        assert!(parse("[global]\nnetbios name = THIS_NAME_IS_TOO_LONG\n").is_err());
    }

    #[test]
    fn interfaces_forms() {
        let (c, _) = ok(
            "[global]\ninterfaces = [::] 0.0.0.0, 192.168.1.10/24 [::1]\nsmb ports = 445 1445\n",
        );
        assert_eq!(
            c.global.interfaces,
            vec!["::", "0.0.0.0", "192.168.1.10", "::1"]
        );
        assert_eq!(c.global.smb_ports, vec![445, 1445]);
        assert_eq!(c.global.listen_addrs().len(), 8);
        let e = err("[global]\n\ninterfaces = eth0\n");
        assert!(e.contains("line 3") && e.contains("eth0"), "{e}");
        assert!(parse("[global]\nsmb ports = 0\n").is_err());
    }

    #[test]
    fn samba_style_config_has_no_unexpected_warnings() {
        let text = "[global]\nserver role = standalone server\nbind interfaces only = yes\n\
                    disable netbios = yes\nload printers = no\nprinting = bsd\n\
                    log file = /var/log/samba/%m.log\nmax log size = 1000\n";
        let (_, w) = ok(text);
        assert!(w.is_empty(), "{w:?}");
        let (_, w) = ok("[global]\npassdb backend = tdbsam\n");
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("passdb backend"));
    }

    #[test]
    fn unknown_option_warning_names_it() {
        let (_, w) = ok("[global]\n\n[pub]\npath = /srv/pub\nvfs objects = fruit\n");
        assert_eq!(
            w,
            vec!["line 5: unknown option \"vfs objects\" in [pub] ignored".to_string()]
        );
        let (_, w) = ok("[pub]\npath = /srv/pub\nWorkGroup = X\n");
        assert!(
            w[0].contains("global option \"workgroup\" in share [pub]"),
            "{w:?}"
        );
    }

    #[test]
    fn structural_errors_name_the_line() {
        assert!(err("[global\n").contains("line 1"));
        assert!(err("[global]\njust words\n").contains("line 2"));
        assert!(err("[global]\n = value\n").contains("line 2"));
        let e = err("[global]\n[docs]\ncomment = x\n");
        assert!(e.contains("line 2") && e.contains("no \"path\""), "{e}");
        assert!(err("[docs]\npath = relative/dir\n").contains("absolute"));
        let e = err("[ipc$]\npath=/x\n");
        assert!(e.contains("reserved"), "{e}");
        let e = err("[a]\npath=/x\n[A]\npath=/y\n");
        assert!(e.contains("line 3") && e.contains("first on line 1"), "{e}");
    }

    #[test]
    fn homes_and_printers_are_skipped() {
        let (c, w) = ok("[homes]\nbrowseable = no\n[printers]\npath = /var/spool\n");
        assert!(c.shares.is_empty());
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn share_defaults_from_global() {
        let text = "[a]\npath = /a\n[global]\nkernel oplocks = no\nsmb encrypt = desired\n\
                    read only = no\nvalid users = alice, \"bob smith\" carol\n\
                    [b]\npath = /b\nkernel oplocks = yes\nread only = yes\nvalid users =\n";
        let (c, w) = ok(text);
        assert!(w.is_empty(), "{w:?}");
        let a = c.share("A").unwrap();
        assert_eq!(a.kernel_oplocks, Some(false));
        assert_eq!(a.smb_encrypt, Some(Encrypt::Desired));
        assert!(!a.read_only);
        assert_eq!(a.valid_users, vec!["alice", "bob smith", "carol"]);
        assert_eq!(a.posix_locking, None);
        let b = c.share("b").unwrap();
        assert_eq!(b.kernel_oplocks, Some(true));
        assert!(b.read_only);
        assert!(b.valid_users.is_empty());
    }

    #[test]
    fn oplock_options() {
        let (c, w) = ok("[global]\noplock break timeout = 5\nlevel2 oplocks = no\n\
                         [a]\npath = /a\n[b]\npath = /b\noplocks = no\nlevel2 oplocks = yes\n");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.global.oplock_break_timeout, 5);
        let a = c.share("a").unwrap();
        assert!(a.oplocks && !a.level2_oplocks);
        let b = c.share("b").unwrap();
        assert!(!b.oplocks && b.level2_oplocks);
        assert_eq!(Global::default().oplock_break_timeout, 35);
        assert!(err("[global]\noplock break timeout = 0\n").contains("oplock break timeout"));
        let (c2, _) = ok(&c.render_effective());
        assert_eq!(c2, c);
    }

    #[test]
    fn durable_options() {
        let d = Global::default();
        assert_eq!((d.durable_timeout, d.durable_max_timeout), (60, 300));
        assert_eq!(d.keeper_socket, None);
        let (c, w) = ok("[global]\nholdfast durable timeout = 10\n\
                         holdfast durable max timeout = 20\n\
                         holdfast keeper socket = /run/k.sock\n\
                         [a]\npath = /a\ndurable handles = no\n");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.global.durable_timeout, 10);
        assert_eq!(c.global.durable_max_timeout, 20);
        assert_eq!(c.global.keeper_socket, Some(PathBuf::from("/run/k.sock")));
        assert_eq!(c.share("a").unwrap().durable_handles, Some(false));
        let (c2, _) = ok(&c.render_effective());
        assert_eq!(c2, c);
        let (c3, _) = ok("[global]\nholdfast keeper socket =\n");
        assert_eq!(c3.global.keeper_socket, None);
        assert!(err("[global]\nholdfast keeper socket = rel.sock\n").contains("keeper socket"));
        assert!(err("[global]\nholdfast durable timeout = 0\n").contains("durable timeout"));
    }

    #[test]
    fn render_round_trip() {
        let text = "[global]\ninterfaces = 10.0.0.1 [fe80::1]\nsmb ports = 4445\n\
                    state directory = /tmp/hf\nserver min protocol = SMB2_10\n\
                    server max protocol = SMB3_02\nserver signing = required\n\
                    server smb encrypt = desired\nlog level = warn\nnetbios name = box\n\
                    workgroup = home\nserver string = My box\nmap to guest = bad user\n\
                    guest account = guest\nrestrict anonymous = 1\nposix locking = no\n\
                    comment = default comment\nguest ok = yes\n\
                    [Media]\npath = /srv/media\nbrowseable = no\nvalid users = \"a b\", c\n\
                    durable handles = yes\nsmb encrypt = off\n[docs]\npath=/srv/docs\n";
        let (c, _) = ok(text);
        let rendered = c.render_effective();
        let (again, w) = ok(&rendered);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(again, c, "{rendered}");
        let (d, _) = ok(DEFAULT_CONFIG);
        assert_eq!(ok(&d.render_effective()).0, d);
        assert!(rendered.starts_with("[global]\n\tinterfaces = 10.0.0.1 fe80::1\n"));
    }
}

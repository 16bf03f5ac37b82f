//! holdfastctl: operator CLI. Exit codes: 0 ok, 1 error, 2 usage.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use holdfast_keeper_proto::DEFAULT_SOCKET;
use holdfast_smbd::config::{self, Config};
use holdfast_smbd::userdb::{self, UserDb, UserRecord};

const DEFAULT_CONFIG_PATH: &str = "/etc/holdfast/smb.conf";

#[derive(Parser)]
#[command(name = "holdfastctl", about = "Manage a Holdfast SMB server")]
struct Cli {
    /// Configuration file; the built-in default is used if it does not exist.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage SMB users.
    #[command(subcommand)]
    User(UserCmd),
    /// List, show and evict handles kept by holdfast-keeper.
    Handles(HandlesArgs),
    /// What the running kernel supports.
    #[command(subcommand)]
    Kernel(KernelCmd),
}

#[derive(Subcommand)]
enum KernelCmd {
    /// Try leases, OFD locks, open_by_handle_at and F_SETDELEG on each
    /// share's file system (a scratch file is created and removed there).
    Probe {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct HandlesArgs {
    /// The keeper's socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Option<HandlesCmd>,
}

#[derive(Subcommand)]
enum HandlesCmd {
    /// Everything about one kept handle.
    Show { id: u64 },
    /// Close a kept handle now (root only); the keeper logs who and why.
    Evict {
        id: u64,
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user; the password is read as one line from stdin.
    Add {
        name: String,
        /// Unix account the user's sessions run as (default: NAME).
        #[arg(long, value_name = "UNIX")]
        unix_user: Option<String>,
        /// Read the password from stdin (required: no interactive prompt).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Change a user's password, read as one line from stdin.
    Passwd {
        name: String,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Delete a user.
    Del { name: String },
    /// List users.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    // clap exits with status 2 on usage errors and 0 for --help.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("holdfastctl: error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn load_config(path: &Path) -> Result<Config, String> {
    let (cfg, warnings) = if path.exists() {
        config::load(path).map_err(|e| e.to_string())?
    } else {
        eprintln!(
            "holdfastctl: {} does not exist; using the built-in default configuration",
            path.display()
        );
        config::parse(config::DEFAULT_CONFIG).map_err(|e| e.to_string())?
    };
    for w in warnings {
        eprintln!("holdfastctl: warning: {w}");
    }
    Ok(cfg)
}

fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading password from stdin: {e}"))?;
    let pw = line.strip_suffix('\n').unwrap_or(&line);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    if pw.is_empty() {
        return Err("empty password refused (give it as one line on stdin)".into());
    }
    Ok(pw.to_string())
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::User(cmd) => run_user(&cli.config, cmd),
        Command::Handles(args) => handles::run(args),
        Command::Kernel(KernelCmd::Probe { json }) => kernel_probe(&cli.config, json),
    }
}

/// Our SMB break timeout (35 s, MS-SMB2) must be shorter than the time a
/// local opener waits for a lease holder, or local opens fail first.
const SMB_BREAK_TIMEOUT_S: u32 = 35;

fn kernel_probe(config: &Path, json: bool) -> Result<(), String> {
    let cfg = load_config(config)?;
    let lbt = kmod_interface::probe::lease_break_time();
    let mut shares = Vec::new();
    for sc in &cfg.shares {
        shares.push((
            sc.name.clone(),
            sc.path.clone(),
            kmod_interface::probe::probe(&sc.path),
        ));
    }
    let release = shares
        .first()
        .map(|s| s.2.kernel_release.clone())
        .unwrap_or_else(|| {
            nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default()
        });
    let device = std::path::Path::new("/dev/holdfast-ofd").exists();
    if json {
        let items: Vec<String> = shares
            .iter()
            .map(|(n, p, r)| {
                format!(
                    "{{\"share\":{},\"path\":{},\"openat2\":{},\"leases\":{},\"ofd_locks\":{},\"open_by_handle_at\":{},\"f_setdeleg\":{}}}",
                    json_str(n),
                    json_str(&p.display().to_string()),
                    r.openat2,
                    r.leases,
                    r.ofd_locks,
                    r.file_handles,
                    r.f_setdeleg
                )
            })
            .collect();
        println!(
            "{{\"kernel\":{},\"lease_break_time_s\":{},\"smb_break_timeout_s\":{},\"holdfast_ofd_device\":{},\"shares\":[{}]}}",
            json_str(&release),
            lbt.map(|v| v.to_string()).unwrap_or_else(|| "null".into()),
            SMB_BREAK_TIMEOUT_S,
            device,
            items.join(",")
        );
        return Ok(());
    }
    let yn = |b: bool| if b { "yes" } else { "no" };
    println!("kernel                {release}");
    match lbt {
        Some(v) if v > SMB_BREAK_TIMEOUT_S => println!(
            "lease-break-time      {v} s (longer than the {SMB_BREAK_TIMEOUT_S} s SMB break timeout: ok)"
        ),
        Some(v) => println!(
            "lease-break-time      {v} s (WARNING: not longer than the {SMB_BREAK_TIMEOUT_S} s SMB break timeout; local opens would break SMB clients' leases before they can answer)"
        ),
        None => println!("lease-break-time      unknown (/proc/sys/fs/lease-break-time unreadable)"),
    }
    println!(
        "/dev/holdfast-ofd     {} (docs/kernel-interface.md part B)",
        yn(device)
    );
    println!();
    println!(
        "{:<12} {:<8} {:<7} {:<10} {:<18} {:<11} path",
        "share", "openat2", "leases", "ofd locks", "open_by_handle_at", "F_SETDELEG"
    );
    for (n, p, r) in &shares {
        println!(
            "{:<12} {:<8} {:<7} {:<10} {:<18} {:<11} {}",
            n,
            yn(r.openat2),
            yn(r.leases),
            yn(r.ofd_locks),
            yn(r.file_handles),
            yn(r.f_setdeleg),
            p.display()
        );
    }
    Ok(())
}

fn run_user(config: &Path, cmd: UserCmd) -> Result<(), String> {
    let cfg = load_config(config)?;
    let open = || UserDb::open(&cfg.global.state_directory).map_err(|e| e.to_string());
    match cmd {
        UserCmd::Add {
            name,
            unix_user,
            password_stdin: _,
        } => {
            userdb::validate_name(&name).map_err(|e| e.to_string())?;
            let unix_user = unix_user.unwrap_or_else(|| name.clone());
            let acct = userdb::resolve_unix_user(&unix_user).map_err(|e| match e {
                userdb::UserDbError::NoSuchUnixUser(u) => {
                    format!("Unix user {u:?} does not exist (create it first, or pass --unix-user)")
                }
                other => other.to_string(),
            })?;
            let db = open()?;
            // Check before reading the password so a typo'd name fails fast.
            if let Some(existing) = db.lookup(&name).map_err(|e| e.to_string())? {
                return Err(format!("user {:?} already exists", existing.name));
            }
            let pw = read_password()?;
            db.add(&name, &acct.name, &pw).map_err(|e| e.to_string())?;
            eprintln!(
                "holdfastctl: added user {name:?} (Unix user {}, uid {})",
                acct.name, acct.uid
            );
        }
        UserCmd::Passwd {
            name,
            password_stdin: _,
        } => {
            let db = open()?;
            if db.lookup(&name).map_err(|e| e.to_string())?.is_none() {
                return Err(format!("no such user {name:?}"));
            }
            let pw = read_password()?;
            db.set_password(&name, &pw).map_err(|e| e.to_string())?;
            eprintln!("holdfastctl: password changed for {name:?}");
        }
        UserCmd::Del { name } => {
            if !open()?.delete(&name).map_err(|e| e.to_string())? {
                return Err(format!("no such user {name:?}"));
            }
            eprintln!("holdfastctl: deleted user {name:?}");
        }
        UserCmd::List { json } => {
            let users = open()?.list().map_err(|e| e.to_string())?;
            if json {
                println!("{}", users_json(&users));
            } else {
                print_table(&users);
            }
        }
    }
    Ok(())
}

fn print_table(users: &[UserRecord]) {
    let w_name = users.iter().map(|u| u.name.len()).max().unwrap_or(0).max(4);
    let w_unix = users
        .iter()
        .map(|u| u.unix_user.len())
        .max()
        .unwrap_or(0)
        .max(9);
    println!("{:w_name$}  {:w_unix$}  CREATED (UTC)", "NAME", "UNIX USER");
    for u in users {
        let mut created = utc_time(u.created);
        if u.disabled {
            created.push_str("  (disabled)");
        }
        println!("{:w_name$}  {:w_unix$}  {created}", u.name, u.unix_user);
    }
}

/// Hand-rolled to avoid a serde dependency for four fields.
fn users_json(users: &[UserRecord]) -> String {
    let items: Vec<String> = users
        .iter()
        .map(|u| {
            format!(
                "{{\"name\":{},\"unix_user\":{},\"created\":{},\"disabled\":{}}}",
                json_str(&u.name),
                json_str(&u.unix_user),
                u.created,
                u.disabled
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

mod handles {
    use super::{json_str, utc_time, HandlesArgs, HandlesCmd};
    use holdfast_keeper_proto::proto::{guid_string, Entry, Guid};
    use holdfast_keeper_proto::{Client, ClientError, ErrorCode, HandleState};

    pub fn run(args: HandlesArgs) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut c =
                Client::connect(&args.socket, "holdfastctl")
                    .await
                    .map_err(|e| match e {
                        ClientError::Io(io) => {
                            format!("cannot reach the keeper at {}: {io}", args.socket.display())
                        }
                        other => other.to_string(),
                    })?;
            match args.cmd {
                None => {
                    let entries = c.list().await.map_err(describe)?;
                    if args.json {
                        let items: Vec<String> = entries.iter().map(entry_json).collect();
                        println!("[{}]", items.join(","));
                    } else {
                        print_table(&entries);
                    }
                }
                Some(HandlesCmd::Show { id }) => {
                    let e = c.show(id).await.map_err(describe)?;
                    if args.json {
                        println!("{}", entry_json(&e));
                    } else {
                        print_entry(&e);
                    }
                }
                Some(HandlesCmd::Evict { id, reason }) => {
                    if reason.trim().is_empty() {
                        return Err("--reason must say why".into());
                    }
                    c.evict(id, &reason).await.map_err(describe)?;
                    eprintln!("holdfastctl: evicted kept handle {id}");
                }
            }
            Ok(())
        })
    }

    fn describe(e: ClientError) -> String {
        match e.code() {
            Some(ErrorCode::NotAllowed) => format!("{e} (evicting needs root)"),
            _ => e.to_string(),
        }
    }

    /// SMB lease letters (R, H, W) or the oplock level.
    fn caching(e: &Entry) -> String {
        let r = &e.record;
        if r.lease_key.is_some() {
            let mut s = String::new();
            for (bit, c) in [(1, 'R'), (2, 'H'), (4, 'W')] {
                if r.lease_state & bit != 0 {
                    s.push(c);
                }
            }
            if s.is_empty() {
                s.push_str("none");
            }
            format!("lease:{s}")
        } else {
            match r.oplock_level {
                0 => "none".into(),
                1 => "oplock:II".into(),
                8 => "oplock:excl".into(),
                9 => "oplock:batch".into(),
                v => format!("oplock:{v:#x}"),
            }
        }
    }

    fn time_left(e: &Entry) -> String {
        match e.time_left_ms {
            Some(ms) => format!("{}.{}s", ms / 1000, ms % 1000 / 100),
            None => "-".into(),
        }
    }

    fn print_table(entries: &[Entry]) {
        let rows: Vec<[String; 10]> = entries
            .iter()
            .map(|e| {
                let r = &e.record;
                [
                    r.id.to_string(),
                    r.state.as_str().into(),
                    r.kind.as_str().into(),
                    time_left(e),
                    r.client_addr.clone(),
                    guid_string(&r.client_guid),
                    format!("{}({})", r.user_name, r.uid),
                    r.share.clone(),
                    caching(e),
                    r.path.clone(),
                ]
            })
            .collect();
        let head = [
            "ID",
            "STATE",
            "KIND",
            "LEFT",
            "CLIENT",
            "CLIENT GUID",
            "USER",
            "SHARE",
            "CACHING",
            "PATH",
        ];
        let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
        for row in &rows {
            for (i, c) in row.iter().enumerate() {
                w[i] = w[i].max(c.len());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(c);
                } else {
                    s.push_str(&format!("{c:w$}  ", w = w[i]));
                }
            }
            println!("{s}");
        };
        line(head.to_vec());
        for (row, e) in rows.iter().zip(entries) {
            line(row.iter().map(String::as_str).collect());
            println!("    kernel lease: {}", e.kernel_lease);
            for l in &e.locks {
                let whose = if l.own { "this handle" } else { "other" };
                println!("    lock: {}  ({whose})", l.text);
            }
            if e.locks_omitted > 0 {
                println!("    ... {} more locks", e.locks_omitted);
            }
        }
    }

    fn opt_guid(g: &Option<Guid>) -> String {
        g.as_ref().map(guid_string).unwrap_or_else(|| "-".into())
    }

    fn print_entry(e: &Entry) {
        let r = &e.record;
        let rows = [
            ("id", r.id.to_string()),
            ("state", r.state.as_str().into()),
            ("kind", r.kind.as_str().into()),
            ("time left", time_left(e)),
            ("timeout", format!("{} ms", r.timeout_ms)),
            ("client", r.client_addr.clone()),
            ("client guid", guid_string(&r.client_guid)),
            ("create guid", guid_string(&r.create_guid)),
            ("file id", format!("{:#018x}", r.persistent_file_id)),
            ("user", format!("{} (uid {})", r.user_name, r.uid)),
            ("share", r.share.clone()),
            ("path", r.path.clone()),
            ("caching", caching(e)),
            ("lease key", opt_guid(&r.lease_key)),
            ("access mask", format!("{:#010x}", r.desired_access)),
            ("share access", format!("{:#x}", r.share_access)),
            ("app instance", opt_guid(&r.app_instance_id)),
            ("deposited", utc_time((r.deposited_at_ms / 1000) as i64)),
            (
                "disconnected",
                r.disconnected_at_ms
                    .map(|t| utc_time((t / 1000) as i64))
                    .unwrap_or_else(|| "-".into()),
            ),
            ("inode", format!("{} on dev {:#x}", e.ino, e.dev)),
            ("kernel lease", e.kernel_lease.clone()),
        ];
        for (k, v) in rows {
            println!("{k:13} {v}");
        }
        for l in &e.locks {
            let whose = if l.own { "this handle" } else { "other" };
            println!("{:13} {}  ({whose})", "lock", l.text);
        }
        if e.locks_omitted > 0 {
            println!("{:13} ... {} more", "lock", e.locks_omitted);
        }
    }

    fn entry_json(e: &Entry) -> String {
        let r = &e.record;
        let g = |g: &Guid| json_str(&guid_string(g));
        let og = |o: &Option<Guid>| o.as_ref().map(g).unwrap_or_else(|| "null".into());
        let on = |o: Option<u64>| o.map(|v| v.to_string()).unwrap_or_else(|| "null".into());
        let locks: Vec<String> = e
            .locks
            .iter()
            .map(|l| format!("{{\"text\":{},\"own\":{}}}", json_str(&l.text), l.own))
            .collect();
        format!(
            concat!(
                "{{\"id\":{},\"state\":{},\"connected\":{},\"kind\":{},\"time_left_ms\":{},",
                "\"timeout_ms\":{},\"client_addr\":{},\"client_guid\":{},\"create_guid\":{},",
                "\"persistent_file_id\":{},\"uid\":{},\"user\":{},\"share\":{},\"path\":{},",
                "\"lease_key\":{},\"lease_state\":{},\"oplock_level\":{},\"desired_access\":{},",
                "\"share_access\":{},\"app_instance_id\":{},\"deposited_at_ms\":{},",
                "\"disconnected_at_ms\":{},\"dev\":{},\"ino\":{},\"kernel_lease\":{},",
                "\"locks\":[{}],\"locks_omitted\":{}}}"
            ),
            r.id,
            json_str(r.state.as_str()),
            r.state == HandleState::Connected,
            json_str(r.kind.as_str()),
            on(e.time_left_ms),
            r.timeout_ms,
            json_str(&r.client_addr),
            g(&r.client_guid),
            g(&r.create_guid),
            r.persistent_file_id,
            r.uid,
            json_str(&r.user_name),
            json_str(&r.share),
            json_str(&r.path),
            og(&r.lease_key),
            r.lease_state,
            r.oplock_level,
            r.desired_access,
            r.share_access,
            og(&r.app_instance_id),
            r.deposited_at_ms,
            on(r.disconnected_at_ms),
            e.dev,
            e.ino,
            json_str(&e.kernel_lease),
            locks.join(","),
            e.locks_omitted
        )
    }
}

/// "YYYY-MM-DD hh:mm:ss" from Unix seconds (days-to-civil conversion).
fn utc_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_known_values() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc_time(1_700_000_000), "2023-11-14 22:13:20");
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}

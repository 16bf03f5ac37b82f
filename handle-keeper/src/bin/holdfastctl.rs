//! holdfastctl: operator CLI. Exit codes: 0 ok, 1 error, 2 usage.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    let cfg = load_config(&cli.config)?;
    let Command::User(cmd) = cli.command;
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

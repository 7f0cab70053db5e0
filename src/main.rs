//! The `participant-files` binary: parses the command line and runs the chosen command.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use std::io::IsTerminal;
use std::sync::Arc;

use participant_files::config::{Cli, Command, Config, RescanArgs, ServeArgs, TokenArgs};
use participant_files::{auth, backends, build, reconcile, rescan, secrets, serve, setup};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(args)) => token(&args),
        Some(Command::Serve(args)) => run_serve(args),
        Some(Command::Setup(args)) => maintain(args, |config| async move {
            let backends = backends::open(&config).await?;
            let mut report = setup::run(&backends, config.resumable.ttl).await?;
            if config.master_key.is_some() {
                report.extend(participant_files::encryption::setup(&config).await?);
            }
            Ok(report)
        }),
        Some(Command::Reconcile(args)) => {
            let min_age = args.min_age;
            maintain(args.serve, move |config| async move {
                let backends = backends::open(&config).await?;
                let report = reconcile::run(&backends, min_age).await?;
                report.write_metrics(&config.data_dir.join(reconcile::METRICS_FILE))?;
                Ok(report.lines)
            })
        }
        Some(Command::Rescan(args)) => run_rescan(args),
        Some(Command::Upload(args)) => run_client(&args.client, |conn| async move {
            let upload = participant_files::client::Upload {
                file: &args.file,
                file_id: args.file_id.as_deref(),
                mime_type: args.mime_type.as_deref(),
                chunk_size: args.chunk_size,
            };
            let file = participant_files::client::upload(&conn, upload).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&file).unwrap_or_default()
            );
            Ok(())
        }),
        Some(Command::Download(args)) => run_client(&args.client, |conn| async move {
            let path =
                participant_files::client::download(&conn, &args.file_id, args.output.as_deref())
                    .await?;
            println!("{}", path.display());
            Ok(())
        }),
        Some(Command::Keys(participant_files::encryption::KeysCommand::New)) => {
            let stdout = std::io::stdout();
            let terminal = stdout.is_terminal();
            match participant_files::encryption::master::write_new(stdout.lock(), terminal) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::Keys(participant_files::encryption::KeysCommand::Rotate(args))) => {
            maintain(*args, |config| async move {
                participant_files::encryption::rotate::command(&config).await
            })
        }
        Some(Command::Keys(participant_files::encryption::KeysCommand::Identity(args))) => {
            export_identity(args)
        }
        None => run_serve(cli.serve),
    }
}

/// Runs a command of the client: exit 0 when done, 1 refused or given up, 2 usage.
fn run_client<F, Fut>(args: &participant_files::config::ClientArgs, run: F) -> ExitCode
where
    F: FnOnce(participant_files::client::Connection) -> Fut,
    Fut: std::future::Future<Output = Result<(), participant_files::client::ClientError>>,
{
    let result = participant_files::client::Connection::new(
        &args.url,
        &args.user,
        &args.token,
        args.retry_for,
    )
    .map(|conn| {
        tokio::runtime::Runtime::new()
            .expect("tokio runtime starts")
            .block_on(run(conn))
    });
    match result.and_then(|r| r) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run_rescan(args: RescanArgs) -> ExitCode {
    let RescanArgs {
        older_than,
        concurrency,
        restart,
        quiet,
        serve,
    } = args;
    maintain(serve, move |config| async move {
        if config.clamd.is_empty() {
            anyhow::bail!("rescan needs a scanner: set PF_CLAMD");
        }
        let backends = backends::open(&config).await?;
        let scanner: Arc<dyn participant_files::scan::Scanner> = Arc::new(
            participant_files::scan::ScannerPool::new(&config.clamd, config.scan_timeout),
        );
        let audit = participant_files::audit::AuditLog::open(&config.audit_log)
            .context("cannot open the audit log")?;
        let options = rescan::Options {
            older_than,
            concurrency: usize::from(concurrency),
            restart,
            progress: !quiet && std::io::stderr().is_terminal(),
            quarantine: config.quarantine,
            data_dir: config.data_dir.clone(),
        };
        rescan::run(&backends, scanner, &audit, &options).await
    })
}

/// Runs a maintenance command and prints its report, one line each.
fn maintain<F, Fut>(args: ServeArgs, job: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<String>>>,
{
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    match runtime.block_on(job(config)) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn export_identity(args: Box<participant_files::encryption::export::IdentityArgs>) -> ExitCode {
    let args = *args;
    let owner = participant_files::model::Owner {
        app: args.app,
        participant: args.participant,
    };
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    maintain(args.serve, move |config| async move {
        let text = participant_files::encryption::export::identity(&config, &owner).await?;
        participant_files::encryption::master::write_secret(
            stdout.lock(),
            terminal,
            "an identity",
            "participant-files keys identity --app A --participant P > identity.txt",
            &text,
        )?;
        Ok(Vec::new())
    })
}

fn token(args: &TokenArgs) -> ExitCode {
    if !args.secrets.jwt_public_key_file.is_empty() {
        eprintln!(
            "error: PF_JWT_PUBLIC_KEY_FILE is set: tokens are signed by whoever holds the private \
             keys, not by this service, so it cannot print one"
        );
        return ExitCode::from(2);
    }
    if let Err(e) =
        participant_files::config::check_secret("PF_JWT_SECRET", args.secrets.jwt_secret.as_deref())
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let secret = match secrets::locate(
        args.secrets.jwt_secret.as_deref(),
        &args.secrets.data_dir,
        "jwt-secret",
    ) {
        Ok((secret, origin)) => {
            eprintln!("{}", secret_origin(&origin));
            secret
        }
        Err(e) => {
            eprintln!(
                "error: cannot read or create the JWT secret in {}: {e}",
                args.secrets.data_dir.display()
            );
            return ExitCode::from(2);
        }
    };
    let roles = if args.roles.is_empty() {
        vec![auth::Role::Participant]
    } else {
        args.roles.clone()
    };
    match auth::mint(&secret, &args.user, &args.app, &roles, args.ttl) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot sign the token: {e}");
            ExitCode::from(2)
        }
    }
}

/// Which secret signed a token: one from another folder than the service's is refused by it.
fn secret_origin(origin: &secrets::Origin) -> String {
    match origin {
        secrets::Origin::Configured => "signed with the secret in PF_JWT_SECRET".to_owned(),
        secrets::Origin::File { path, created } => {
            let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            if *created {
                format!(
                    "warning: there was no JWT secret, so a new one was created in {}; the \
                     service accepts this token only if it uses that secret: run `token` in the \
                     service's folder, or give it the service's PF_DATA_DIR or PF_JWT_SECRET",
                    path.display()
                )
            } else {
                format!(
                    "signed with the secret in {} (the service must use the same data folder, \
                     PF_DATA_DIR, and no PF_JWT_SECRET)",
                    path.display()
                )
            }
        }
    }
}

fn run_serve(args: ServeArgs) -> ExitCode {
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    participant_files::logging::init(config.log_format);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let state = build(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (PF_LISTEN)", config.listen))?;
    tracing::info!(
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        "participant-files is serving"
    );
    serve(state, listener, shutdown_signal(), config.shutdown_timeout).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

//! Checks of the parsers and of `Config::from_args`.

use super::parse::*;
use super::*;
use clap::Parser;

#[test]
fn sizes_and_durations() {
    assert_eq!(parse_size("256MiB"), Ok(256 * MIB));
    assert_eq!(parse_size("1024"), Ok(1024));
    assert!(parse_size("lots").is_err());
    assert!(parse_size("0").is_err());
    assert_eq!(
        parse_origin("https://app.example.org:8443"),
        Ok("https://app.example.org:8443".to_owned())
    );
    assert!(parse_origin("ftp://app.example.org").is_err());
    assert!(parse_origin("https://app.example.org/path").is_err());
    assert!(parse_origin("https://").is_err());
    assert_eq!(parse_url_ttl("1h"), Ok(Duration::from_hours(1)));
    assert!(parse_url_ttl("8d").is_err());
    assert!(parse_duration("soon").is_err());
}

#[test]
fn locations() {
    assert_eq!(
        parse_store("s3://my-bucket/a/b/"),
        Ok(StoreLocation::S3 {
            bucket: "my-bucket".into(),
            prefix: "a/b".into()
        })
    );
    assert!(parse_store("s3://UPPER").is_err());
    assert!(parse_store("gs://b").is_err());
    assert!(parse_index("dynamodb://files").is_ok());
    assert!(parse_index("postgres").is_err());
    assert_eq!(
        parse_clamd("tcp://127.0.0.1:3310"),
        Ok(ClamdAddress::Tcp("127.0.0.1:3310".into()))
    );
    assert!(parse_clamd("tcp://nohost").is_err());
    assert!(parse_clamd("unix://relative").is_err());
}

#[test]
fn a_scanner_means_streaming_uploads_and_a_smaller_default_limit() {
    let cli = Cli::parse_from(["participant-files", "--clamd", "tcp://127.0.0.1:3310"]);
    let config = Config::from_args(cli.serve).unwrap();
    assert_eq!(config.max_file_size, 100 * MIB);
    assert_eq!(config.upload_mode, Mode::Streaming);
    let cli = Cli::parse_from([
        "participant-files",
        "--clamd",
        "tcp://127.0.0.1:3310",
        "--upload-mode",
        "presigned",
    ]);
    let e = Config::from_args(cli.serve).unwrap_err().to_string();
    assert!(e.contains("needs an S3 store"), "{e}");
    // With S3, a scanner also turns the default to streaming.
    let cli = Cli::parse_from([
        "participant-files",
        "--store",
        "s3://bucket",
        "--jwt-secret",
        "jwt-secret-of-the-test-0123456789abcdef",
        "--url-secret",
        "url-secret-of-the-test-0123456789abcdef",
        "--clamd",
        "unix:///run/clamd.sock",
    ]);
    let config = Config::from_args(cli.serve.clone()).unwrap();
    assert_eq!(
        (config.upload_mode, config.download_mode),
        (Mode::Streaming, Mode::Streaming)
    );
    // Presigned uploads with a scanner are asked for explicitly; the settler scans them.
    let mut args = cli.serve;
    args.upload_mode = Some(Mode::Presigned);
    let config = Config::from_args(args).unwrap();
    assert_eq!(config.upload_mode, Mode::Presigned);
    let cli = Cli::parse_from([
        "participant-files",
        "--store",
        "s3://bucket",
        "--jwt-secret",
        "jwt-secret-of-the-test-0123456789abcdef",
        "--url-secret",
        "url-secret-of-the-test-0123456789abcdef",
    ]);
    let config = Config::from_args(cli.serve).unwrap();
    assert_eq!(
        (config.upload_mode, config.download_mode),
        (Mode::Presigned, Mode::Presigned)
    );
}

#[test]
fn short_secrets_are_refused() {
    for (flag, var) in [
        ("--jwt-secret", "PF_JWT_SECRET"),
        ("--url-secret", "PF_URL_SECRET"),
    ] {
        let short = "x".repeat(MIN_SECRET_LEN - 1);
        let cli = Cli::parse_from(["participant-files", flag, &short]);
        let e = Config::from_args(cli.serve).unwrap_err().to_string();
        assert!(e.contains(var) && e.contains("31 bytes"), "{e}");
        let enough = "x".repeat(MIN_SECRET_LEN);
        let cli = Cli::parse_from(["participant-files", flag, &enough]);
        assert!(Config::from_args(cli.serve).is_ok());
    }
}

#[test]
fn public_url_is_required_off_loopback() {
    let cli = Cli::parse_from(["participant-files", "--listen", "0.0.0.0:8080"]);
    assert!(Config::from_args(cli.serve).is_err());
    let cli = Cli::parse_from(["participant-files", "--listen", "127.0.0.1:9000"]);
    let config = Config::from_args(cli.serve).unwrap();
    assert_eq!(config.public_url, "http://127.0.0.1:9000");
    assert_eq!(config.max_file_size, 256 * MIB);
    assert_eq!(config.upload_mode, Mode::Streaming);
}

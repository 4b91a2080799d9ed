//! The PostgreSQL parameters pgpilot sets itself: neither the member file
//! (`postgresql.parameters`) nor the dynamic configuration may set them.

/// Parameters pgpilot sets itself; the value says which setting drives them.
pub fn managed_parameter(name: &str) -> Option<&'static str> {
    Some(match name {
        "port" => "postgresql.port",
        "listen_addresses" => "postgresql.listen",
        "unix_socket_directories" => "postgresql.socket_dir",
        "primary_conninfo"
        | "primary_slot_name"
        | "restore_command"
        | "recovery_target"
        | "recovery_target_lsn"
        | "recovery_target_time"
        | "recovery_target_xid"
        | "recovery_target_name"
        | "recovery_target_timeline" => "the HA loop",
        "hba_file" | "ident_file" | "config_file" | "data_directory" => "pgpilot's file layout",
        "cluster_name" => "cluster.name",
        _ => return None,
    })
}

/// The parameters `[postgresql.tls]` sets.
pub const TLS_PARAMETERS: [&str; 4] = ["ssl", "ssl_cert_file", "ssl_key_file", "ssl_ca_file"];

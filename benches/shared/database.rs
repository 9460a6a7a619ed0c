//! The local Postgres for the benchmarks (127.0.0.1:5432, trust auth, as
//! scripts/setup leaves it).

/// The connection string of database `name`.
pub fn connection(name: &str) -> String {
    format!("host=127.0.0.1 user=postgres dbname={name}")
}

pub async fn connect(connection: &str) -> tokio_postgres::Client {
    let (client, driver) = tokio_postgres::connect(connection, tokio_postgres::NoTls)
        .await
        .expect("Postgres at 127.0.0.1:5432 (scripts/setup)");
    tokio::spawn(driver);
    client
}

/// Drops database `name` (and its replication slots) and creates it again.
pub async fn reset(name: &str) {
    let admin = connect(&connection("postgres")).await;
    // Separate statements: DROP DATABASE cannot run in the implicit
    // transaction of a multi-statement query.
    for sql in [
        format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{name}'"
        ),
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
}

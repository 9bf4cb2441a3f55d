//! Helpers shared by the test binaries that need real databases and processes.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

/// The PostgreSQL the tests may create databases in (trust auth on 127.0.0.1).
pub fn postgres_admin_url() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A database of its own for one test, dropped by [`PgDb::drop_db`].
pub struct PgDb {
    pub name: String,
    pub url: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl PgDb {
    /// Creates a fresh database. A missing PostgreSQL fails the test (it is
    /// a required service, not an optional one).
    pub async fn create() -> PgDb {
        let admin = postgres_admin_url();
        let name = format!(
            "sbtest_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                % 1_000_000
        );
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap().to_string();
        PgDb {
            url: format!("{base}/{name}"),
            name,
        }
    }

    pub async fn drop_db(self) {
        let mut conn = sqlx::PgConnection::connect(&postgres_admin_url())
            .await
            .unwrap();
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await;
    }
}

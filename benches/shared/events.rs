//! Events shared by the benchmarks.

use ferry::event::{ChangeEvent, Header, Operation};

/// A ReportResource payload of about 1 KB, as a service would write it.
fn payload(n: usize) -> String {
    let padding = "x".repeat(560);
    format!(
        r#"{{"type":"host","reporter_type":"hbi","reporter_instance_id":"3088a3b6-6d4c-4ac8-9b5c-2ad2b1b6a3f1","representations":{{"metadata":{{"local_resource_id":"host-{n}","api_href":"https://console.example.com/api/inventory/v1/hosts/host-{n}","console_href":"https://console.example.com/insights/inventory/host-{n}","reporter_version":"2.3.1"}},"common":{{"workspace_id":"a64d17d0-aec3-410a-acd0-e0b85b22c076"}},"reporter":{{"satellite_id":"2c4196f1-0371-4f4c-8913-e113cfaa6e67","subscription_manager_id":"af94f92b-0b65-4cac-b449-6b77e665a08f","insights_inventory_id":"05707922-7b0a-4fe6-982d-6adbc7695b8f","ansible_host":"host-{n}.example.com","notes":"{padding}"}}}}}}"#
    )
}

pub fn host_events(count: usize) -> Vec<ChangeEvent> {
    (0..count)
        .map(|n| ChangeEvent {
            source: "postgres".into(),
            op: Operation::Message,
            key: Some(format!("host-{n}")),
            before: None,
            after: Some(payload(n)),
            headers: [
                ("id", format!("6d1e5a8e-{n:04}-4c1e-9a3f-2d7b8e5c4a10")),
                ("aggregatetype", "host".into()),
                ("operation", "ReportResource".into()),
                ("version", "v1beta2".into()),
            ]
            .into_iter()
            .map(|(name, value)| Header {
                name: name.into(),
                value,
            })
            .collect(),
            tenant: None,
            origin: Some("public.outbox".into()),
            transaction_id: Some("744".into()),
            position: format!("0/16B3748:{n}"),
            commit_time: Some(1_795_341_600_000_000),
        })
        .collect()
}

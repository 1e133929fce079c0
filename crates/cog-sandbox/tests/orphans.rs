//! Idle instances of a plugin no longer loaded — the directory drops a
//! plugin, or a tenant's copy of it, when it changes — can never be taken
//! again.
//! In a binary of its own: the process-wide count is the subject.

use std::sync::mpsc;

use cog_sandbox::{Exchange, Limits, Phase, Plugin, PluginError, Runtime};

/// Counts its calls in a global: the first call of a fresh instance answers
/// 0, a call of one that served before answers the calls it made since
/// (which the sandbox refuses as a bad return).
const COUNTING: &str = r#"(module
     (memory (export "memory") 1)
     (global $calls (mut i32) (i32.const 0))
     (func (export "cog_abi_version") (result i32) i32.const 1)
     (func (export "cog_on_request") (result i32)
       global.get $calls
       i32.const 1
       i32.add
       global.set $calls
       global.get $calls
       i32.const 1
       i32.sub))"#;

fn call(plugin: &Plugin, tenant: &str) -> Result<(), PluginError> {
    let mut ex = Exchange::new(http::Method::GET, http::Uri::from_static("/"), tenant);
    plugin.call(Phase::Request, &mut ex)
}

/// Threads that hold the dropped plugin's instances, a few each, filled
/// the process-wide bound (256); they used to keep it full for as long as
/// they lived, so no instance of the plugin loaded since was ever pooled:
/// every call made a new one. Each thread now gives its orphans' places up
/// when it needs one.
/// The tests here count process-wide: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_dropped_plugins_idle_instances_make_room_for_the_live_ones() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const THREADS: usize = 32;
    const TENANTS: usize = 8;
    let wasm = wat::parse_str(COUNTING).unwrap();
    let rt = Runtime::new();
    let old = rt.load("old", &wasm, Limits::default()).unwrap();
    let (done_tx, done_rx) = mpsc::channel::<Option<bool>>();
    std::thread::scope(|s| {
        let (mut orders, mut threads) = (Vec::new(), Vec::new());
        for t in 0..THREADS {
            let (order_tx, order_rx) = mpsc::channel::<Plugin>();
            orders.push(order_tx);
            let (old, done) = (old.clone(), done_tx.clone());
            threads.push(s.spawn(move || {
                for n in 0..TENANTS {
                    call(&old, &format!("t{t}-{n}")).unwrap();
                }
                drop(old);
                done.send(None).unwrap();
                let new = order_rx.recv().unwrap();
                call(&new, "x").unwrap();
                let reused = matches!(call(&new, "x"), Err(PluginError::BadReturn(1)));
                done.send(Some(reused)).unwrap();
            }));
        }
        for _ in 0..THREADS {
            assert_eq!(done_rx.recv().unwrap(), None);
        }
        assert_eq!(Runtime::idle_instances(), 256, "the bound is full");
        drop(old);
        let new = rt.load("new", &wasm, Limits::default()).unwrap();
        for order in &orders {
            order.send(new.clone()).unwrap();
        }
        let reused = (0..THREADS)
            .filter(|_| done_rx.recv().unwrap() == Some(true))
            .count();
        assert_eq!(reused, THREADS, "threads that pooled the live plugin");
        for thread in threads {
            thread.join().unwrap();
        }
        // Counted right: what is left is this thread's instance of `new`.
        assert_eq!(Runtime::idle_instances(), 1);
    });
}

/// A thread whose own pool is full (64 idle instances) lets its instances
/// of plugins no longer loaded go before any live plugin's: no tenant's
/// warm instance is evicted while an orphan holds a place.
#[test]
fn a_full_thread_lets_its_orphans_go_before_live_instances() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let wasm = wat::parse_str(COUNTING).unwrap();
    let rt = Runtime::new();
    let old = rt.load("old", &wasm, Limits::default()).unwrap();
    let live = rt.load("live", &wasm, Limits::default()).unwrap();
    std::thread::spawn(move || {
        call(&old, "gone").unwrap();
        drop(old);
        // 63 live tenants and the orphan fill the thread's 64 places; the
        // 64th tenant needs one.
        for n in 0..64 {
            call(&live, &format!("t{n}")).unwrap();
        }
        let cold: Vec<usize> = (0..64)
            .filter(|n| call(&live, &format!("t{n}")).is_ok())
            .collect();
        assert_eq!(
            cold,
            Vec::<usize>::new(),
            "evicted while an orphan held a place"
        );
    })
    .join()
    .unwrap();
}

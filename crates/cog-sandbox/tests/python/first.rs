use crate::support::*;

#[test]
fn a_hook_sets_a_header() {
    let rt = runtime();
    let t = std::time::Instant::now();
    let p = load(
        &rt,
        "import cog\ndef on_request(req):\n    req.headers['x-py'] = 'yes'\n",
    )
    .unwrap();
    eprintln!("load {:?}", t.elapsed());
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let (r, ex) = run(&p, "acme");
        eprintln!("call {:?}", t.elapsed());
        r.unwrap();
        assert_eq!(ex.request_headers["x-py"], "yes");
    }
}

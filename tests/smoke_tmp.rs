use std::time::{Duration, Instant};
#[test]
fn smoke() {
    let total = tasklet::dispatch(|| {
        let a = tasklet::spawn(|| { tasklet::sleep(Duration::from_millis(20)); 1 });
        let b = tasklet::Builder::new().name("b").stack_size(128 * 1024).spawn(|| 2).unwrap();
        a.join().unwrap() + b.join().unwrap()
    });
    assert_eq!(total, 3);
}
#[test]
fn kill_and_timeout() {
    tasklet::dispatch(|| {
        let h = tasklet::spawn(|| tasklet::sleep(Duration::from_secs(100)));
        tasklet::yield_now();
        h.kill();
        assert!(h.join().unwrap_err().is_killed());
        let t = Instant::now();
        let r = tasklet::timeout(Duration::from_millis(10), || tasklet::sleep(Duration::from_secs(10)));
        assert!(r.is_err());
        assert!(t.elapsed() < Duration::from_secs(1));
        let p = tasklet::spawn(|| panic!("boom"));
        assert!(p.join().unwrap_err().is_panic());
        let _left = tasklet::spawn(|| tasklet::sleep(Duration::from_secs(100)));
    });
}

//! What the CLI shows while it works: progress bars on a terminal, one
//! line per epoch or run otherwise, and the evaluation report.
use indicatif::{ProgressBar, ProgressStyle};
use iwtvae::data::Dataset;
use iwtvae::eval::{evaluate_on_reporting, EvalOptions};
use iwtvae::network::Network;
use iwtvae::train::{EpochLog, Progress};
use std::time::Instant;

/// `evaluate_on` with a progress bar over the images (drawn only when
/// stderr is a terminal): k = 5000 over the test set is minutes on a CPU.
pub(crate) fn evaluate_with_bar(
    device: iwtvae::device::Device,
    net: &Network<f32>,
    params: &[f32],
    data: &Dataset,
    opts: &EvalOptions,
) -> iwtvae::Result<(iwtvae::eval::EvalReport, Vec<iwtvae::eval::ImageEstimate>)> {
    let bar = ProgressBar::new(data.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("eval k={prefix} [{bar:30}] {pos}/{len} images {msg} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(opts.k.to_string());
    let result = evaluate_on_reporting(device, net, params, data, opts, &|n| {
        bar.inc(n as u64);
        bar.set_message(format!("{:.0} img/s", bar.position() as f64 / bar.elapsed().as_secs_f64()));
    });
    bar.finish_and_clear();
    result
}

pub(crate) struct Bar {
    pub(crate) bar: Option<ProgressBar>,
    pub(crate) start: Instant,
    pub(crate) images: usize,
    pub(crate) quiet: bool,
}

impl Progress for Bar {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.start = Instant::now();
        self.images = 0;
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
        self.bar = Some(bar);
    }
    fn step(&mut self, loss: f64, images: usize) {
        self.images += images;
        if let Some(b) = &self.bar {
            let rate = self.images as f64 / self.start.elapsed().as_secs_f64();
            b.set_message(format!("loss {loss:.3} {rate:.0} img/s"));
            b.inc(1);
        }
    }
    fn epoch_end(&mut self, log: &EpochLog) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if !self.quiet {
            let test = match (log.test_k, log.test_nll) {
                (Some(k), Some(nll)) => format!("  test nll(k={k}) {nll:.4}"),
                (Some(k), None) => format!("  test nll(k={k}) not finite"),
                _ => String::new(),
            };
            eprintln!(
                "epoch {:>4}  loss {:.4}{test}  lr {:.4}  {:.1} s  {:.0} img/s",
                log.epoch, log.loss, log.lr, log.seconds, log.images_per_sec
            );
        }
    }
}

pub(crate) fn print_report(r: &iwtvae::eval::EvalReport) {
    println!("images          {}", r.images);
    println!("k               {}", r.k);
    match r.nll_se {
        Some(se) => println!("nll             {:.4} ± {se:.4} (standard error over the images)", r.nll),
        None => println!("nll             {:.4}", r.nll),
    }
    for b in &r.bounds {
        let label = format!("bound k={}", b.k);
        match b.nll_se {
            Some(se) => println!("{label:<15} {:.4} ± {se:.4}", b.nll),
            None => println!("{label:<15} {:.4}", b.nll),
        }
    }
    println!("elbo (-ELBO)    {:.4}", r.elbo);
    println!("recon           {:.4}", r.recon);
    println!("recon_at_mean   {:.4}", r.recon_at_mean);
    println!("active units    {} (z {}, u {})", r.active_units, r.active_units_z, r.active_units_u);
    println!("ess             mean {:.1}, min {:.2} (effective samples of the k = {})", r.ess_mean, r.ess_min, r.k);
    println!("seconds         {:.2} ({:.1} images/s on {}, {})", r.seconds, r.images_per_sec, r.device, r.precision);
}

pub(crate) struct ReproduceLines {
    pub(crate) start: Instant,
}

pub(crate) struct EpochLines {
    pub(crate) name: &'static str,
    pub(crate) epochs: usize,
}

impl Progress for EpochLines {
    fn epoch_start(&mut self, _: usize, epochs: usize, _: usize) {
        self.epochs = epochs;
    }
    fn step(&mut self, _: f64, _: usize) {}
    fn epoch_end(&mut self, log: &EpochLog) {
        eprintln!(
            "    {:<14} epoch {:>3}/{}  loss {:.3}  {:.1} s  {:.0} img/s",
            self.name, log.epoch, self.epochs, log.loss, log.seconds, log.images_per_sec
        );
    }
}

impl iwtvae::reproduce::ReproduceProgress for ReproduceLines {
    fn run_start(&self, index: usize, total: usize, spec: &iwtvae::reproduce::RunSpec, resumed: bool) {
        eprintln!(
            "[{}/{}] {} ({} {}, k {}, batch {}){} after {:.0} s",
            index + 1,
            total,
            spec.name,
            spec.model,
            spec.objective,
            spec.k,
            spec.batch_size,
            if resumed { ", resuming" } else { "" },
            self.start.elapsed().as_secs_f64()
        );
    }
    fn eval_start(&self, spec: &iwtvae::reproduce::RunSpec, images: usize, k: usize) {
        eprintln!("    {:<14} evaluating: NLL k = {k} over {images} test images", spec.name);
    }
    fn run_end(&self, index: usize, total: usize, r: &iwtvae::reproduce::RunResult) {
        eprintln!(
            "[{}/{}] {} done: NLL {:.2} (seed README {:.2}), recon {:.2}; train {:.0} s, eval {:.0} s",
            index + 1,
            total,
            r.name,
            r.nll,
            r.seed_nll,
            r.recon,
            r.train_seconds,
            r.eval_seconds
        );
    }
    fn epochs(&self, spec: &iwtvae::reproduce::RunSpec) -> Box<dyn Progress + Send> {
        Box::new(EpochLines { name: spec.name, epochs: 0 })
    }
}

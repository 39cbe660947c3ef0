//! The subcommands' flags (clap).
use clap::Args;
use iwtvae::eval::DEFAULT_CHUNK;
use std::path::PathBuf;

/// A count flag (images, samples, epochs, threads, sizes): clap refuses 0
/// and names the flag, before any work starts.
fn count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// `--checkpoint`: a checkpoint file, or a run directory, which stands for
/// its checkpoint.safetensors.
fn checkpoint_file(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    if !path.is_dir() {
        return Ok(path);
    }
    let file = path.join("checkpoint.safetensors");
    if file.is_file() {
        Ok(file)
    } else {
        Err(format!("{s} is a directory without a checkpoint.safetensors"))
    }
}

/// What probe and encode read: a model, the images and how they become targets.
#[derive(Args)]
pub(crate) struct ModelInput {
    /// A checkpoint, or a run directory (its checkpoint.safetensors); the run
    /// directory's config.json gives the default --binarize.
    #[arg(long, value_parser = checkpoint_file)]
    pub(crate) checkpoint: PathBuf,
    /// Directory with the IDX files (default: the run's --data, else data/mnist).
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Targets encoded: dynamic or none (default: the run's, else dynamic).
    #[arg(long)]
    pub(crate) binarize: Option<String>,
    /// Keys the binarization of the images, as in eval.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = count)]
    pub(crate) threads: Option<usize>,
}

#[derive(Args)]
pub(crate) struct ProbeArgs {
    #[command(flatten)]
    pub(crate) input: ModelInput,
    /// Rotation angles in degrees, counter-clockwise as displayed, comma-separated.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, default_value = "-45,-30,-15,0,15,30,45")]
    pub(crate) angles: Vec<f64>,
    /// Fit the read-outs on the first N training images only.
    #[arg(long, value_parser = count)]
    pub(crate) limit_train: Option<usize>,
    /// Test on the first N test images only.
    #[arg(long, value_parser = count)]
    pub(crate) limit: Option<usize>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct EncodeArgs {
    #[command(flatten)]
    pub(crate) input: ModelInput,
    /// Output file: .safetensors (numpy / PyTorch: safetensors.numpy.load_file) or .csv.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// test or train.
    #[arg(long, default_value = "test")]
    pub(crate) split: String,
    /// Encode the first N images only.
    #[arg(long, value_parser = count)]
    pub(crate) limit: Option<usize>,
}

#[derive(Args)]
pub(crate) struct ShowArgs {
    /// A checkpoint, or a run directory (its checkpoint.safetensors); the run
    /// directory's log.jsonl, eval.json and config.json are used when present.
    #[arg(long, value_parser = checkpoint_file)]
    pub(crate) checkpoint: PathBuf,
    /// Directory with the IDX files (default: the run's --data, else data/mnist).
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Output directory (default: <checkpoint dir>/pictures).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// File name prefix, e.g. "tps-" gives tps-recon.png.
    #[arg(long, default_value = "")]
    pub(crate) prefix: String,
    /// Targets shown and encoded: dynamic or none (default: the run's, else dynamic).
    #[arg(long)]
    pub(crate) binarize: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Test digits in the reconstruction figure.
    #[arg(long, value_parser = count, default_value_t = 24)]
    pub(crate) digits: usize,
    /// Pixel scale of the images.
    #[arg(long, value_parser = count, default_value_t = 3)]
    pub(crate) scale: usize,
}

#[derive(Args)]
pub(crate) struct ReproduceArgs {
    /// Results directory: runs/<name>-seed<N>/ per configuration, seed-tables.{md,json}, and seed-spread.{md,json} once some configuration has two or more seeds.
    #[arg(long, default_value = "results")]
    pub(crate) out: PathBuf,
    #[arg(long, default_value = "data/mnist")]
    pub(crate) data: PathBuf,
    #[arg(long, default_value = "auto")]
    pub(crate) device: String,
    /// Configurations trained at the same time (threads are split between them).
    #[arg(long, value_parser = count, default_value_t = 1)]
    pub(crate) jobs: usize,
    /// Worker threads in all (default: all cores).
    #[arg(long, value_parser = count)]
    pub(crate) threads: Option<usize>,
    /// Training seed, or several comma-separated (1,2,3): each seed is a whole
    /// reproduction (seed-tables.* for seed 1, seed-tables-seed<N>.* for the
    /// others), and two or more give seed-spread.*.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub(crate) seed: Vec<u64>,
    #[arg(long, value_parser = count, default_value_t = 50)]
    pub(crate) epochs: usize,
    #[arg(long, default_value_t = 5000)]
    pub(crate) eval_k: usize,
    /// Only these runs (comma-separated names, e.g. tps-iwae5,vae-elbokl).
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Vec<String>,
    /// Use only the first N training and test images (a quick smoke run).
    #[arg(long, value_parser = count)]
    pub(crate) limit: Option<usize>,
}

#[derive(Args, Clone)]
pub(crate) struct Common {
    /// Directory with train-/t10k- images and labels in IDX format (raw or .gz)
    /// (default: data/mnist; for eval, and for train --resume, the run's own --data).
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Where to run: auto, cpu, cuda[:i], or emulated (the CUDA kernels on
    /// the CPU emulator: slow, for checking the GPU path without a GPU).
    #[arg(long, default_value = "auto")]
    pub(crate) device: String,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = count)]
    pub(crate) threads: Option<usize>,
    /// Seed for initialisation, shuffling and all noise.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Targets: dynamic (fresh Bernoulli draw per use) or none (continuous
    /// byte/255) (default: dynamic; for eval, the run's own, else dynamic).
    #[arg(long, default_value = "dynamic")]
    pub(crate) binarize: String,
}

#[derive(Args)]
pub(crate) struct TrainArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// none (plain VAE), affine, or tps.
    #[arg(long, default_value = "tps")]
    pub(crate) transform: String,
    #[arg(long, value_parser = count, default_value_t = 42)]
    pub(crate) z_dim: usize,
    /// Size of u (default 18; 0 for --transform none).
    #[arg(long)]
    pub(crate) u_dim: Option<usize>,
    #[arg(long, value_parser = count, default_value_t = 256)]
    pub(crate) hidden: usize,
    /// TPS control points per side.
    #[arg(long, default_value_t = 3)]
    pub(crate) tps_grid: usize,
    /// iwae, elbo (k-sample), or elbo-kl (one sample, analytic KL); iwae-dreg
    /// and elbo-stl train iwae's and elbo's bound with the lower-variance
    /// path-derivative encoder gradient (DReG, Tucker et al. 2019; STL,
    /// Roeder et al. 2017).
    #[arg(long, default_value = "iwae")]
    pub(crate) objective: String,
    /// Importance samples per image (default 5; 1 for elbo-kl).
    #[arg(long, value_parser = count)]
    pub(crate) k: Option<usize>,
    #[arg(long, value_parser = count, default_value_t = 50)]
    pub(crate) epochs: usize,
    #[arg(long, value_parser = count, default_value_t = 100)]
    pub(crate) batch_size: usize,
    /// adadelta (the seed) or adam (the IWAE paper).
    #[arg(long, default_value = "adadelta")]
    pub(crate) optimizer: String,
    /// poly (the seed), iwae (3^i epochs at lr·10^(−i/7)), or constant.
    #[arg(long, default_value = "poly")]
    pub(crate) schedule: String,
    /// Learning rate (default 1.0 for adadelta, 1e-3 for adam).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) lr: Option<f64>,
    /// Train on the first N training images only.
    #[arg(long, value_parser = count)]
    pub(crate) limit_train: Option<usize>,
    /// Run directory: checkpoint, optimizer state, log.jsonl, eval.json.
    #[arg(long, default_value = "runs/iwtvae")]
    pub(crate) out: PathBuf,
    /// Importance samples for the final test-set NLL (0 skips it).
    #[arg(long, default_value_t = 5000)]
    pub(crate) eval_k: usize,
    /// The test split's bound (eval's nll with --test-k samples) in the log
    /// every N epochs and after the last (0: never).
    #[arg(long, default_value_t = 1)]
    pub(crate) test_every: usize,
    /// Samples for that bound (default: the training --k).
    #[arg(long, value_parser = count)]
    pub(crate) test_k: Option<usize>,
    /// Monitor on the first N test images only (the final evaluation takes them all).
    #[arg(long, value_parser = count)]
    pub(crate) test_limit: Option<usize>,
    /// Continue the run in --out from its last checkpoint, with its own settings
    /// (its config.json): other flags need not be repeated, and must agree if given.
    #[arg(long)]
    pub(crate) resume: bool,
    /// u2theta's init: torch (PyTorch default, as the seed) or identity (zero weight and bias: warps start at the identity).
    #[arg(long, default_value = "torch")]
    pub(crate) theta_init: String,
    /// The GPU's layer GEMMs: fp32 (the CPU's arithmetic) or tf32 (tensor cores, as PyTorch's allow_tf32; --device cuda only).
    #[arg(long, default_value = "fp32")]
    pub(crate) precision: String,
}

#[derive(Args)]
pub(crate) struct EvalArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// A checkpoint in the iwtvae safetensors format, or a run directory (its
    /// checkpoint.safetensors).
    #[arg(long, value_parser = checkpoint_file)]
    pub(crate) checkpoint: PathBuf,
    /// test or train.
    #[arg(long, default_value = "test")]
    pub(crate) split: String,
    /// Importance samples per image.
    #[arg(long, value_parser = count, default_value_t = 5000)]
    pub(crate) k: usize,
    /// Evaluate the first N images only.
    #[arg(long, value_parser = count)]
    pub(crate) limit: Option<usize>,
    /// Samples per decoder pass (memory ∝ chunk × image size per thread).
    #[arg(long, value_parser = count, default_value_t = DEFAULT_CHUNK)]
    pub(crate) chunk: usize,
    /// Arithmetic of the decoder layers over the k samples: fp32, or tf32 or
    /// bf16 inputs with fp32 sums (tf32: GPU tensor cores; bf16: tensor cores,
    /// or on the CPU AVX512-BF16, ~1.5x fp32 there). auto: tf32 on a GPU, fp32
    /// on the CPU (tf32 and bf16 are within 0.01 nats of fp32, see the README).
    #[arg(long, default_value = "auto")]
    pub(crate) precision: String,
    /// Also the IWAE bound at these smaller k (comma-separated, each dividing
    /// --k), from the same samples: the k samples split into k/K disjoint
    /// groups of K and their bounds averaged. 1 is the ELBO; e.g. 1,5,50,500
    /// shows how fast the bound tightens towards the k-sample NLL. In the
    /// JSON as `bounds`, per image as columns nll_k<K>.
    #[arg(long, value_delimiter = ',', value_parser = count)]
    pub(crate) bounds: Vec<usize>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write each image's estimates (CSV) to FILE.
    #[arg(long)]
    pub(crate) per_image: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct CompareArgs {
    /// Per-image CSV of model A (`iwtvae eval --per-image`).
    pub(crate) a: PathBuf,
    /// Per-image CSV of model B, on the same images with the same --seed.
    pub(crate) b: PathBuf,
    /// The column compared: nll, elbo, recon, recon_at_mean, or nll_k<K> (a
    /// bound of `eval --bounds`, in both files).
    #[arg(long, default_value = "nll")]
    pub(crate) metric: String,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

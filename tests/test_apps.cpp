// cac_train / cac_eval: checkpoint round trip and corrupt checkpoints, bit-identical resume, and
// the command line's errors for bad flags and missing data.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <functional>
#include <map>
#include <tuple>

#include "apps/device_option.h"
#include "apps/device_batches.h"
#include "apps/evaluate.h"
#include "apps/posthoc.h"
#include "apps/predict.h"
#include "apps/scoring.h"
#include "apps/run.h"
#include "apps/train.h"
#include "data/benchmarks.h"
#include "data/readers.h"
#include "eval/report.h"
#include "eval/scores.h"
#include "core/autograd.h"
#include "core/build_info.h"
#include "core/cuda_runtime.h"
#include <nlohmann/json.hpp>
#include "models/checkpoint.h"
#include "models/training.h"
#include "tests/fake_datasets.h"
#include "tests/tiny_run.h"

namespace fs = std::filesystem;

namespace cac {
namespace {

// A scratch folder per test (removed at the end).
struct Dir : testing::TempDir {
  Dir() : testing::TempDir("cac-apps") {}
};

// Runs f and expects a cac::Error whose message contains `needle` (the file, flag or cause).
void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// A tiny MNIST-format dataset: 10 classes x `per` images of 28x28 (class-dependent bright bar).
void write_mnist(const std::string& dir, int per) { testing::write_mnist_idx(dir, per); }

// A command's exit code and its stdout + stderr; a whole text file (both defined below).
std::pair<int, std::string> run_cmd(const std::string& cmd);
std::string read_all(const fs::path& p);
// The command exits non-zero and says `needle` (the flag, file or problem) on stdout or stderr;
// returns what it said, for further checks.
std::string expect_command_fails(const std::string& cmd, const std::string& needle) {
  auto [rc, out] = run_cmd(cmd);
  EXPECT_NE(rc, 0) << cmd;
  EXPECT_NE(out.find(needle), std::string::npos) << cmd << ":\n" << out;
  return out;
}

TEST(Checkpoint, RoundTripAndCorruptFiles) {
  Dir d;
  Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector(std::vector<int64_t>{7}, {});
  save_safetensors(d / "c.safetensors", {{"encoder.conv1.weight", a}, {"encoder.bn1.num_batches_tracked", b}}, {{"epochs_done", "3"}});
  Safetensors st = load_safetensors(d / "c.safetensors");
  EXPECT_EQ(st.tensors.at("encoder.conv1.weight").to_vector<float>(), a.to_vector<float>());
  EXPECT_EQ(st.tensors.at("encoder.bn1.num_batches_tracked").item(), 7);
  EXPECT_EQ(st.metadata.at("epochs_done"), "3");
  EXPECT_FALSE(fs::exists(d / "c.safetensors.tmp"));  // written through a temporary + rename
  // Truncated: the header now points past the end.
  fs::resize_file(d / "c.safetensors", fs::file_size(d / "c.safetensors") - 5);
  expect_error([&] { load_safetensors(d / "c.safetensors"); }, "c.safetensors");
  std::ofstream(d / "junk.safetensors") << "garbage";
  EXPECT_THROW(load_safetensors(d / "junk.safetensors"), Error);
  // Restoring into a model that needs other shapes names the tensor.
  Tensor other = Tensor::zeros({3, 2});
  save_safetensors(d / "c2.safetensors", {{"w", a}}, {});
  expect_error([&] { restore_tensors(load_safetensors(d / "c2.safetensors"), {{"w", other}}, d / "c2.safetensors"); },
               "tensor w");
}

// A safetensors file with this header text and `data_bytes` zero bytes of data.
void write_raw_safetensors(const std::string& path, const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((uint64_t(header.size()) >> (8 * i)) & 0xff);
  out += header + std::string(data_bytes, '\0');
  std::ofstream(path, std::ios::binary) << out;
}

// Found by tests/fuzz (fuzz_checkpoint's contract) or by reading the loader against it: headers that
// parse as JSON but describe impossible tensors fail naming the file, before any allocation.
TEST(Checkpoint, ImpossibleHeadersFailNamingTheFile) {
  Dir d;
  const std::string p = d / "bad.safetensors";
  const std::vector<std::pair<std::string, std::string>> cases = {
      // 2^32 x 2^32 floats: the element count wraps to 0 in 64 bits, which matched the empty data.
      {R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", "impossible shape"},
      {R"({"w": {"dtype": "F32", "shape": [1e300], "data_offsets": [0, 4]}})", "not an integer"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 4]}})", "not a non-negative integer"},
      {R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", "negative dimension"},
      {R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 4]}})", "holds 4 bytes"},
      {R"({"__metadata__": "x"})", "__metadata__ is not an object"},
      {R"({"w": {"dtype": "F32", "shape": 7, "data_offsets": [0, 4]}})", "shape is not a list"},
  };
  for (const auto& [header, needle] : cases) {
    write_raw_safetensors(p, header, 4);
    expect_error([&] { load_safetensors(p); }, "bad.safetensors");
    expect_error([&] { load_safetensors(p); }, needle);
  }
}

// Issue 22, items 3 and 4: the tensors' byte ranges must tile the data section (the safetensors
// rule: no overlap, no hole; an overlap let one tensor's bytes be read as another's, and cac_eval
// reported AUROC 0.684 for a 0.809 run), and a tensor holding NaN or Inf is refused when a
// checkpoint is loaded into a model, naming the tensor (cac_eval used to rewrite deploy.json with
// null anchors before failing).
TEST(Checkpoint, RangesTileTheDataAndValuesAreFinite) {
  Dir d;
  const std::string p = d / "bad.safetensors";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
       "overlap"},
      {R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
       "unused bytes"},
      {R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", "unused bytes"},  // 12 bytes of data
  };
  for (const auto& [header, needle] : cases) {
    write_raw_safetensors(p, header, 12);
    expect_error([&] { load_safetensors(p); }, "bad.safetensors");
    expect_error([&] { load_safetensors(p); }, needle);
  }
  Tensor w = Tensor::from_vector(std::vector<float>{1, std::nanf(""), 3}, {3}), into = Tensor::zeros({3});
  save_safetensors(d / "nan.safetensors", {{"encoder.conv1.weight", w}}, {});
  expect_error([&] { restore_tensors(load_safetensors(d / "nan.safetensors"), {{"encoder.conv1.weight", into}}, d / "nan.safetensors"); },
               "encoder.conv1.weight holds NaN or Inf");
  EXPECT_FALSE(first_non_finite({{"w", w}}).empty());
  EXPECT_TRUE(first_non_finite({{"w", into}}).empty());
}

// --resume on a last.safetensors that lacks cac_train's bookkeeping (another tool's checkpoint, or a
// hand-edited one) names the file and the field instead of failing with "map::at" or "stoi".
TEST(Train, ResumeFromACheckpointWithoutBookkeepingNamesTheFile) {
  Dir d;
  fs::create_directories(d / "run");
  app::RunConfig c = testing::tiny_mnist_run(d / "mnist", d / "run", "cpu");
  c.epochs = {1};
  c.lrs = {0.01};
  std::ofstream(d / "run/config.json") << c.to_json();
  Tensor w = Tensor::zeros({2});
  save_safetensors(d / "run/last.safetensors", {{"w", w}}, {{"best_metric", "0.5"}});
  expect_error([&] { app::run_train(app::RunConfig{}, d / "run"); }, "last.safetensors: no 'epochs_done'");
  save_safetensors(d / "run/last.safetensors", {{"w", w}}, {{"epochs_done", "1x"}, {"best_metric", "0.5"}});
  expect_error([&] { app::run_train(app::RunConfig{}, d / "run"); }, "epochs_done is '1x'");
}

// config.json and deploy.json are read back by --resume, cac_eval and cac_predict: a value out of the
// flags' range, or of the wrong type, names the file and the field.
TEST(RunFiles, ConfigAndDeploymentFieldsAreChecked) {
  const app::RunConfig good = testing::tiny_mnist_run("/data", "/out", "cpu");
  const nlohmann::json base = nlohmann::json::parse(good.to_json());
  EXPECT_NO_THROW(app::RunConfig::from_json(base.dump(), "config.json"));
  const std::vector<std::tuple<const char*, nlohmann::json, const char*>> config_cases = {
      {"batch", 0, "batch must be 1-65536"},       {"trial", 1.5, "trial must be an integer"},
      {"lrs", {0.1, 0.01, 0.001}, "same length"},  {"dataset", "Foo", "dataset is not a known benchmark"},
      {"seed", -1, "seed must be an integer"},     {"image_size", 1e300, "image_size must be an integer"},
      {"device", 3, "device must be a string"},    {"device", "cuda:1", "CUDA_VISIBLE_DEVICES=1"},    {"dropout", 1.0, "dropout must be in [0, 1)"},
      {"lr_schedule", "linear", "unknown --lr-schedule 'linear'"}, {"warmup_epochs", 1, "belong to lr_schedule cosine"},
      {"label_smoothing", 0.1, "label_smoothing applies to the CE baseline"},
      {"randaugment", {2}, "randaugment must be [] or [N, M]"}, {"randaugment", {2, 31}, "randaugment must be"},
      {"graph", "on", "unknown --graph 'on': expected auto, off"},
      {"precision", "fp16", "unknown --precision 'fp16': expected fp32, tf32, bf16"},
      {"data_on_device", true, "data_on_device must be a string"},
  };
  for (const auto& [key, value, needle] : config_cases) {
    nlohmann::json j = base;
    j[key] = value;
    expect_error([&] { app::RunConfig::from_json(j.dump(), "runs/x/config.json"); }, "runs/x/config.json");
    expect_error([&] { app::RunConfig::from_json(j.dump(), "runs/x/config.json"); }, needle);
  }
  // The GPU speed settings: recorded, read back, and absent in older files (auto).
  nlohmann::json off = base;
  off["graph"] = "off";
  EXPECT_EQ(app::RunConfig::from_json(off.dump(), "config.json").graph, app::GraphUse::Off);
  off.erase("graph");
  off.erase("data_on_device");
  EXPECT_EQ(app::RunConfig::from_json(off.dump(), "config.json").graph, app::GraphUse::Auto);
  EXPECT_EQ(base.at("graph"), "auto");
  app::Deployment dep;
  dep.method = "cac";
  dep.arch = "classifier32";
  dep.num_classes = 2;
  dep.channels = 1;
  dep.mean = {0.5f};
  dep.std = {0.25f};
  dep.anchors = {10, 0, 0, 10};
  dep.class_names = {"a", "b"};
  const nlohmann::json dbase = nlohmann::json::parse(dep.to_json());
  EXPECT_NO_THROW(app::Deployment::from_json(dbase.dump(), "deploy.json"));
  const std::vector<std::tuple<const char*, nlohmann::json, const char*>> deploy_cases = {
      {"std", {0.0}, "std of 0"},          {"anchors", nlohmann::json::array(), "inconsistent"},
      {"image_size", 0, "image_size 0"},   {"threshold", "high", "threshold must be a number"},
      {"method", "svm", "unknown method"}, {"mean", {1e300}, "mean[0] must be a finite number"},
      {"accept", 2.0, "accept 2 is outside"},
      // Issue 22, item 14: validated as --threshold is (every image was called unknown while the
      // report still said "accepts 95% of the validation knowns").
      {"threshold", -1.0, "threshold -1 is negative"},
  };
  for (const auto& [key, value, needle] : deploy_cases) {
    nlohmann::json j = dbase;
    j[key] = value;
    expect_error([&] { app::Deployment::from_json(j.dump(), "runs/x/deploy.json"); }, "runs/x/deploy.json");
    expect_error([&] { app::Deployment::from_json(j.dump(), "runs/x/deploy.json"); }, needle);
  }
  // The deployed score (issue 24): what each needs, and nothing read from elsewhere than beside it.
  auto with = [&](std::initializer_list<std::pair<const char*, nlohmann::json>> fields) {
    nlohmann::json j = dbase;
    for (const auto& [k, v] : fields) j[k] = v;
    return j.dump();
  };
  auto refused = [&](const std::string& text, const char* needle) {
    expect_error([&] { app::Deployment::from_json(text, "runs/x/deploy.json"); }, needle);
  };
  refused(with({{"score", "odin"}}), "'odin' is not a score");
  refused(with({{"score", "knn"}}), "missing field 'knn_k'");
  refused(with({{"score", "knn"}, {"knn_k", 0}}), "knn_k 0 must be at least 1");
  refused(with({{"score", "knn"}, {"knn_k", 5}}), "missing field 'score_file'");
  refused(with({{"score", "knn"}, {"knn_k", 5}, {"score_file", "../../etc/passwd"}, {"score_id", "1"}}),
          "score_file '../../etc/passwd' is not the knn score's file (deploy-knn.safetensors)");
  const app::Deployment k = app::Deployment::from_json(
      with({{"score", "knn"}, {"knn_k", 5}, {"score_file", "deploy-knn.safetensors"}, {"score_id", "1"}}), "d");
  EXPECT_EQ(k.score, app::Scorer::Knn);
  EXPECT_EQ(k.knn_k, 5);
  refused(with({{"score", "mahalanobis"}, {"score_file", "deploy-knn.safetensors"}, {"score_id", "1"}}),
          "not the mahalanobis score's file");
  // mls and energy are negative for confident images: a negative threshold is theirs to have.
  EXPECT_EQ(app::Deployment::from_json(with({{"score", "mls"}, {"threshold", -3.5}}), "d").threshold, -3.5);
  refused(with({{"score", "msp"}, {"threshold", -0.5}}), "msp scores are >= 0");
  // CE runs keep anchors only for the cac score; records from before --deploy-score: the method's own.
  refused(with({{"method", "ce"}, {"score", "mls"}}), "4 anchor values for 2 classes and the mls score");
  EXPECT_EQ(app::Deployment::from_json(with({{"method", "ce"}, {"score", "cac"}}), "d").score, app::Scorer::Cac);
  nlohmann::json old = nlohmann::json::parse(with({{"method", "ce"}, {"anchors", nlohmann::json::array()}}));
  old.erase("score");
  EXPECT_EQ(app::Deployment::from_json(old.dump(), "d").score, app::Scorer::Msp);
}

app::RunConfig tiny_config(const std::string& data, const std::string& out) {
  return testing::tiny_mnist_run(data, out, "cpu");
}

// The tiny MNIST run the evaluation tests start from: the data in D/mnist, the run in D/run.
void train_tiny_run(const Dir& d) {
  write_mnist(d / "mnist", 12);
  ASSERT_EQ(app::run_train(tiny_config(d / "mnist", d / "run"), ""), 0);
}

// cac_eval's options for `run` on the CPU, two loader threads (what each evaluation test starts from).
app::EvalOptions cpu_eval(const std::string& run) {
  app::EvalOptions o;
  o.runs = {run};
  o.device = "cpu";
  o.workers = 2;
  return o;
}

// scores.csv's rows of one score (the run's own, cac, unless asked), as their six other fields
// (run, split, set, label, prediction, score), after checking the header.
std::vector<std::vector<std::string>> read_scores_csv(const std::string& path, const std::string& scorer = "cac") {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  EXPECT_EQ(line, "run,split,set,scorer,label,prediction,score");
  std::vector<std::vector<std::string>> rows;
  while (std::getline(f, line)) {
    std::vector<std::string> fields;
    std::stringstream ls(line);
    for (std::string x; std::getline(ls, x, ',');) fields.push_back(x);
    EXPECT_EQ(fields.size(), 7u) << line;
    if (fields.size() != 7u || fields[3] != scorer) continue;
    fields.erase(fields.begin() + 3);
    rows.push_back(fields);
  }
  return rows;
}

// AUROC by its definition, P(unknown scores higher) + P(tie) / 2 over every (known, unknown) pair:
// independent of eval::auroc's ranks, to check what cac_eval reports against its scores.csv.
double auroc_by_pairs(const std::vector<double>& known, const std::vector<double>& unknown) {
  double wins = 0;
  for (double k : known)
    for (double u : unknown) wins += u > k ? 1.0 : u == k ? 0.5 : 0.0;
  return wins / (double(known.size()) * double(unknown.size()));
}

// cac_eval's post-hoc scores (apps/posthoc.h: matrix products on the run's device) against the
// host references of eval/scores.h (tested by hand in test_metrics), on random features: k-NN
// within float rounding, Mahalanobis within 1e-4 relative; the logit scores are the references'.
TEST(Scores, CacEvalPathsMatchTheReferences) {
  Generator g(11, 0);
  const int K = 3, dim = 5, n = 60, m = 20;
  std::vector<float> f(size_t(n) * dim), q(size_t(m) * dim), z(size_t(m) * K);
  std::vector<int64_t> labels;
  for (int i = 0; i < n; ++i) labels.push_back(i % K);
  for (size_t i = 0; i < f.size(); ++i) f[i] = float(g.normal() + (i / dim) % K);
  for (float& x : q) x = float(2 * g.normal());
  for (float& x : z) x = float(3 * g.normal());
  app::SetOutputs train{std::vector<float>(size_t(n) * K, 0.f), f, dim}, set{z, q, dim};
  Tensor anchors = Tensor::zeros({K, K});
  for (int k = 0; k < K; ++k) anchors.data<float>()[k * K + k] = 10;
  const app::PosthocScorers s(app::all_scorers(), {&train, &labels, anchors}, K, Device::CPU, 7);
  const std::vector<double> knn = s.score(app::Scorer::Knn, set), ref = eval::KnnScorer(f, dim, 7).score(q);
  const std::vector<double> mah = s.score(app::Scorer::Mahalanobis, set),
                            mref = eval::MahalanobisScorer(f, labels, K, dim).score(q);
  for (int i = 0; i < m; ++i) {
    EXPECT_NEAR(knn[size_t(i)], ref[size_t(i)], 1e-5) << i;
    EXPECT_NEAR(mah[size_t(i)], mref[size_t(i)], 1e-4 * mref[size_t(i)]) << i;
  }
  EXPECT_EQ(s.score(app::Scorer::Mls, set), eval::mls_scores(z, K));
  EXPECT_EQ(s.score(app::Scorer::Energy, set), eval::energy_scores(z, K));
  EXPECT_EQ(s.score(app::Scorer::Cac, set), app::score_logits(Method::CAC, z, K, anchors).score);
  EXPECT_EQ(app::PosthocScorers({app::Scorer::Knn}, {&train, &labels, anchors}, K, Device::CPU, 500).knn_k(), n);
  EXPECT_EQ(app::parse_scorers("mls,knn,mls"), (std::vector<app::Scorer>{app::Scorer::Mls, app::Scorer::Knn}));
  expect_error([] { app::parse_scorers("mls,odin"); }, "'odin' is not a score (the scores: cac, msp, mls, energy, knn, "
                                                       "mahalanobis, or all)");
}

// A python3 that can import `module` ("" when none can): CAC_PYTHON, Debian's, the PATH's.
std::string python_with(const std::string& module) {
  std::vector<std::string> candidates;
  if (const char* p = std::getenv("CAC_PYTHON")) candidates.push_back(p);
  candidates.push_back("/usr/bin/python3");  // Debian's, which the python3-* packages install into
  candidates.push_back("python3");
  for (const auto& p : candidates)
    if (run_cmd(p + " -c 'import " + module + "'").first == 0) return p;
  return "";
}

// Issue 24: the AUROC of every score in eval.json is what scikit-learn computes from scores.csv
// (tests/sklearn_auroc_check.py; scripts/install-deps.sh --with-sklearn installs Debian's).
TEST(Scores, AurocOfEveryScoreAsScikitLearnComputesIt) {
  const std::string py = python_with("sklearn");
  if (py.empty()) GTEST_SKIP() << "no python3 here can import sklearn (scripts/install-deps.sh --with-sklearn)";
  Dir d;
  train_tiny_run(d);
  app::EvalOptions o = cpu_eval(d / "run");
  o.json_out = d / "eval.json";
  o.scores_csv = d / "scores.csv";
  ASSERT_EQ(app::run_eval(o), 0);
  auto [rc, out] = run_cmd(py + " " + CAC_SOURCE_DIR + "/tests/sklearn_auroc_check.py " + (d / "scores.csv") + " " +
                           (d / "eval.json"));
  EXPECT_EQ(rc, 0) << out;
  EXPECT_GE(std::count(out.begin(), out.end(), '\n'), 5) << out;  // cac, msp, mls, energy, knn (+ mahalanobis)
}

// Ctrl-C (SIGINT) or SIGTERM (a scheduler's time limit) while cac_train runs: it stops at the next
// batch with the shell's exit code for that signal and says what to do. In the first epoch there is
// no checkpoint yet, so it says to start over, not to resume.
TEST(Train, InterruptedInTheFirstEpochSaysToStartOver) {
  Dir d;
  write_mnist(d / "mnist", 300);
  for (const auto& [sig, code, what] : std::vector<std::tuple<std::string, int, std::string>>{
           {"INT", 130, "interrupted"}, {"TERM", 143, "terminated (SIGTERM)"}}) {
    const std::string run = d / ("run-" + sig), log = d / ("console-" + sig + ".txt");
    // Signalled once the first progress line is out, so the handler is in place (a background job
    // of a script starts with SIGINT ignored until cac_train installs its own).
    std::ofstream(d / "interrupt.sh") << CAC_TRAIN_BIN << " --dataset MNIST --data-dir " << (d / "mnist") << " --out "
                                      << run << " --epochs 1 --lr 0.01 --batch 2 --device cpu --workers 1 >" << log
                                      << " 2>&1 &\npid=$!\n"
                                      << "for i in $(seq 600); do grep -q 'epoch   1/1 \\[' " << log
                                      << " 2>/dev/null && break; sleep 0.1; done\n"
                                      << "kill -" << sig << " $pid\nwait $pid\necho rc=$?\n";
    auto [rc, out] = run_cmd("bash " + (d / "interrupt.sh"));
    ASSERT_EQ(rc, 0) << out;
    const std::string console = read_all(log);
    EXPECT_NE(out.find("rc=" + std::to_string(code)), std::string::npos) << sig << ": " << out << console;
    EXPECT_NE(console.find(what + " in the first epoch, before any checkpoint; run the same command again"),
              std::string::npos) << console;
    EXPECT_FALSE(fs::exists(run + "/last.safetensors"));
  }
}

// Issue 22, item 5: a resume checkpoint that claims more epochs than config.json's schedule is
// refused (it said "resuming at epoch 100", then "done").
TEST(Train, ResumeRefusesMoreEpochsThanTheSchedule) {
  Dir d;
  write_mnist(d / "mnist", 12);
  ASSERT_EQ(app::run_train(tiny_config(d / "mnist", d / "run"), "", 1), 0);
  Safetensors st = load_safetensors(d / "run/last.safetensors");
  st.metadata["epochs_done"] = "99";
  NamedTensorList tensors(st.tensors.begin(), st.tensors.end());
  save_safetensors(d / "run/last.safetensors", tensors, st.metadata);
  expect_error([&] { app::run_train(app::RunConfig{}, d / "run"); }, "epochs_done 99 is more than the 2 epochs");
}

// Issue 22, item 6: divergence stops the run at the first non-finite validation loss too, and never
// writes a checkpoint holding NaN or Inf; the message names a checkpoint only where one exists.
TEST(Train, DivergenceStopsWithoutWritingANonFiniteCheckpoint) {
  Dir d;
  write_mnist(d / "mnist", 12);
  app::RunConfig c = tiny_config(d / "mnist", d / "run");
  c.epochs = {3};
  c.lrs = {1e6};
  ::testing::internal::CaptureStderr();
  ::testing::internal::CaptureStdout();
  const int rc = app::run_train(c, "");
  ::testing::internal::GetCapturedStdout();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(rc, 3) << err;
  for (const char* f : {"last.safetensors", "best.safetensors"}) {
    if (!fs::exists(d / ("run/" + std::string(f)))) continue;
    const Safetensors st = load_safetensors(d / ("run/" + std::string(f)));
    EXPECT_TRUE(first_non_finite(NamedTensorList(st.tensors.begin(), st.tensors.end())).empty()) << f;
  }
  if (err.find("is intact") != std::string::npos) EXPECT_TRUE(fs::exists(d / "run/last.safetensors")) << err;
  else EXPECT_NE(err.find("No checkpoint was written"), std::string::npos) << err;
}

// A metrics.csv row without its wall-time column (the 11th, "seconds").
std::string without_seconds(const std::string& row) {
  size_t start = 0;
  for (int i = 0; i < 10 && start != std::string::npos; ++i) start = row.find(',', start) + 1;
  const size_t end = row.find(',', start);
  return row.substr(0, start) + (end == std::string::npos ? "" : row.substr(end + 1));
}

// --precision bf16 (issue 25) on the CPU (the bf16 twins): the run trains, says so, keeps float32
// checkpoints, resumes to the uninterrupted run bit for bit (the resume inside stage one, stage
// two starting from best.safetensors: both load weights the optimizer's bf16 copy must follow), and
// differs from the float32 run only by bf16 rounding (its first training loss within 2% of it);
// config.json records it.
TEST(Train, Bf16PrecisionTrainsAndResumesExactly) {
  Dir d;
  write_mnist(d / "mnist", 12);
  auto bf16 = [&](const std::string& out) {
    app::RunConfig c = tiny_config(d / "mnist", d / out);
    c.precision = app::Precision::BF16;
    c.epochs = {2, 1};
    c.stage2 = app::Stage2::Reload;
    return c;
  };
  ASSERT_EQ(app::run_train(bf16("full"), ""), 0);
  ASSERT_EQ(app::run_train(bf16("cut"), "", /*stop_after_epochs=*/1), 0);
  ASSERT_EQ(app::run_train(app::RunConfig{}, d / "cut"), 0);
  ASSERT_EQ(app::run_train(tiny_config(d / "mnist", d / "f32"), ""), 0);
  const Safetensors a = load_safetensors(d / "full/last.safetensors"), b = load_safetensors(d / "cut/last.safetensors");
  for (const auto& [name, t] : a.tensors) {
    const Tensor& u = b.tensors.at(name);
    EXPECT_NE(t.dtype(), DType::BF16) << name;
    ASSERT_EQ(t.nbytes(), u.nbytes()) << name;
    EXPECT_EQ(std::memcmp(t.raw(), u.raw(), t.nbytes()), 0) << name << " differs after resume";
  }
  const std::string full = app::read_text(d / "full/metrics.csv"), cut = app::read_text(d / "cut/metrics.csv");
  std::istringstream s1(full), s2(cut), s3(app::read_text(d / "f32/metrics.csv"));
  std::string l1, l2, l3;
  std::getline(s1, l1), std::getline(s2, l2), std::getline(s3, l3);  // headers
  ASSERT_TRUE(std::getline(s1, l1) && std::getline(s2, l2) && std::getline(s3, l3));
  EXPECT_EQ(without_seconds(l1), without_seconds(l2));
  const double loss16 = std::stod(l1.substr(l1.find(',', l1.find(',') + 1) + 1));
  const double loss32 = std::stod(l3.substr(l3.find(',', l3.find(',') + 1) + 1));
  EXPECT_NEAR(loss16, loss32, 0.02 * loss32) << l1 << "\n" << l3;
  EXPECT_NE(app::read_text(d / "full/train.log").find("precision: bf16"), std::string::npos);
  EXPECT_NE(app::read_text(d / "full/config.json").find("\"precision\": \"bf16\""), std::string::npos);
}

TEST(Train, ResumeGivesTheSameRunAsNoInterruption) {
  Dir d;
  write_mnist(d / "mnist", 12);
  ASSERT_EQ(app::run_train(tiny_config(d / "mnist", d / "full"), ""), 0);
  ASSERT_EQ(app::run_train(tiny_config(d / "mnist", d / "cut"), "", /*stop_after_epochs=*/1), 0);
  ASSERT_EQ(app::run_train(app::RunConfig{}, d / "cut"), 0);  // --resume: settings from config.json
  Safetensors a = load_safetensors(d / "full/last.safetensors"), b = load_safetensors(d / "cut/last.safetensors");
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (auto& [name, t] : a.tensors) {
    const Tensor& u = b.tensors.at(name);
    ASSERT_EQ(t.nbytes(), u.nbytes()) << name;
    EXPECT_EQ(std::memcmp(t.raw(), u.raw(), t.nbytes()), 0) << name << " differs after resume";
  }
  EXPECT_EQ(a.metadata.at("epochs_done"), "2");
  std::ifstream m1(d / "full/metrics.csv"), m2(d / "cut/metrics.csv");
  std::string l1, l2;
  int rows = 0;
  while (std::getline(m1, l1) && std::getline(m2, l2)) {
    // Every column but the wall time ("seconds") is identical.
    EXPECT_EQ(without_seconds(l1), without_seconds(l2)) << "row " << rows;
    ++rows;
  }
  EXPECT_EQ(rows, 3);  // header + 2 epochs
  // The run log holds both sessions of the interrupted run: one validation line per epoch.
  std::ifstream lf(d / "cut/train.log");
  const std::string log((std::istreambuf_iterator<char>(lf)), std::istreambuf_iterator<char>());
  EXPECT_NE(log.find("resuming"), std::string::npos) << log;
  size_t validations = 0;
  for (size_t at = log.find("validation:"); at != std::string::npos; at = log.find("validation:", at + 1)) ++validations;
  EXPECT_EQ(validations, 2u) << log;
  EXPECT_TRUE(fs::exists(d / "full/best.safetensors"));
  EXPECT_TRUE(fs::exists(d / "full/config.json"));
  // A checkpoint written before the dropout counters were tensors (they were the metadata field
  // "dropout_calls", comma-separated in module order) resumes to the same run.
  ASSERT_EQ(app::run_train(tiny_config(d / "mnist", d / "old"), "", /*stop_after_epochs=*/1), 0);
  Safetensors old = load_safetensors(d / "old/last.safetensors");
  NamedTensorList kept;
  std::string calls;
  for (auto& [name, t] : old.tensors) {
    if (name.rfind("resume.", 0) == 0) calls += std::to_string(int64_t(t.item())) + ",";
    else kept.push_back({name, t});
  }
  ASSERT_FALSE(calls.empty());
  old.metadata["dropout_calls"] = calls;
  save_safetensors(d / "old/last.safetensors", kept, old.metadata);
  ASSERT_EQ(app::run_train(app::RunConfig{}, d / "old"), 0);
  Safetensors c = load_safetensors(d / "old/last.safetensors");
  for (auto& [name, t] : a.tensors)
    EXPECT_EQ(std::memcmp(t.raw(), c.tensors.at(name).raw(), t.nbytes()), 0) << name << " differs after a legacy resume";
}

// configs/authors-release.json sets the authors' own schedule per dataset (their second stages
// differ from Table 1 for SVHN and CIFAR*) and leaves the others at the protocol's; a flag still
// wins, and a misspelt setting inside by_dataset is named.
TEST(Train, AuthorsReleaseConfigSetsTheirEpochsPerDataset) {
  const std::string cfg = std::string(CAC_SOURCE_DIR) + "/configs/authors-release.json";
  auto epochs = [&](const std::string& args) {
    auto [rc, out] = run_cmd(std::string(CAC_TRAIN_BIN) + " --config " + cfg + " --print-config " + args);
    EXPECT_EQ(rc, 0) << out;
    return rc == 0 ? nlohmann::json::parse(out)["epochs"].get<std::vector<int>>() : std::vector<int>{};
  };
  EXPECT_EQ(epochs("--dataset SVHN"), (std::vector<int>{50, 25}));
  EXPECT_EQ(epochs("--dataset CIFAR+10"), (std::vector<int>{150, 50}));
  EXPECT_EQ(epochs("--dataset MNIST"), (std::vector<int>{35, 35}));
  EXPECT_EQ(epochs("--dataset CIFAR10 --epochs 3,2"), (std::vector<int>{3, 2}));
  Dir d;
  std::ofstream(d / "typo.json") << R"({"by_dataset": {"SVHN": {"epoch": [1, 1]}}})";
  auto [rc, out] = run_cmd(std::string(CAC_TRAIN_BIN) + " --config " + (d / "typo.json") + " --dataset SVHN --print-config");
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("'epoch' in by_dataset.SVHN"), std::string::npos) << out;
}

// --stage2 reload (the default, the CAC authors' release): stage 2 starts from stage 1's best
// checkpoint (here epoch 1 or 2 of 3: the last stage-1 epoch is not the best), with fresh momentum,
// and best.safetensors is then the best of stage 2 only. Stage 2's learning rate is 1e-30, so its
// one epoch leaves the parameters where the reload put them; a second run whose stage-1 momentum
// was overwritten with 1000 ends bit-identical to the first, so nothing of that momentum survives.
TEST(Train, Stage2ReloadsTheBestOfStage1WithFreshMomentum) {
  Dir d;
  write_mnist(d / "mnist", 12);
  app::RunConfig c = tiny_config(d / "mnist", d / "a");
  c.epochs = {3, 1};
  c.lrs = {0.1, 1e-30};
  ASSERT_EQ(app::run_train(c, "", /*stop_after_epochs=*/3), 0);
  const Safetensors stage1_best = load_safetensors(d / "a/best.safetensors");
  const int best_epoch = std::stoi(stage1_best.metadata.at("epochs_done"));
  ASSERT_LT(best_epoch, 3) << "the test needs a stage 1 whose last epoch is not the best";
  fs::copy(d / "a", d / "b", fs::copy_options::recursive);
  Safetensors b = load_safetensors(d / "b/last.safetensors");
  NamedTensorList tensors;
  for (auto& [name, t] : b.tensors)
    tensors.push_back({name, name == "optimizer.momentum_buffer" ? Tensor::full(t.shape(), 1000.0) : t});
  save_safetensors(d / "b/last.safetensors", tensors, b.metadata);
  ASSERT_EQ(app::run_train(app::RunConfig{}, d / "a"), 0);
  ASSERT_EQ(app::run_train(app::RunConfig{}, d / "b"), 0);
  const Safetensors la = load_safetensors(d / "a/last.safetensors"), lb = load_safetensors(d / "b/last.safetensors");
  for (auto& [name, t] : la.tensors)
    EXPECT_EQ(std::memcmp(t.raw(), lb.tensors.at(name).raw(), t.nbytes()), 0) << name << ": stage-1 momentum survived";
  auto model = app::build_model(c, 4);
  for (auto& [name, p] : model->named_parameters())
    EXPECT_EQ(std::memcmp(la.tensors.at(name).raw(), stage1_best.tensors.at(name).raw(), p.nbytes()), 0)
        << name << ": stage 2 did not start from stage 1's best";
  EXPECT_EQ(load_safetensors(d / "a/best.safetensors").metadata.at("epochs_done"), "4");  // the best of stage 2
  const std::string log = read_all(d / "a/train.log");
  EXPECT_NE(log.find(fmt::format("stage 2 starts from epoch {}'s weights", best_epoch)), std::string::npos) << log;
  const std::string metrics = read_all(d / "a/metrics.csv");
  EXPECT_NE(metrics.find("seconds,weights_from\n"), std::string::npos) << metrics;
  EXPECT_EQ(metrics.substr(metrics.rfind(',') + 1), fmt::format("{}\n", best_epoch)) << metrics;
}

// The CE baseline keeps the epoch of highest validation accuracy (ties: the earlier epoch), as the
// authors' release does, and config.json records the criterion; a config.json written before the
// field existed reads back as the old criterion (lowest validation loss), stage 2 continuing and
// bilinear rotation: what such a run did, so it resumes as it began.
TEST(Train, CeBaselineKeepsTheHighestValidationAccuracy) {
  Dir d;
  write_mnist(d / "mnist", 12);
  app::RunConfig c = tiny_config(d / "mnist", d / "ce");
  c.method = Method::CE;
  c.checkpoint_by.reset();
  c.epochs = {4};
  c.lrs = {0.1};
  ASSERT_EQ(app::run_train(c, ""), 0);
  std::istringstream csv(read_all(d / "ce/metrics.csv"));
  std::string row;
  std::getline(csv, row);
  int epoch = 0, best_acc = 0, best_loss = 0;
  double acc_max = -1, loss_min = 1e300;
  while (std::getline(csv, row)) {
    ++epoch;
    std::vector<double> v;
    std::istringstream fields(row);
    for (std::string f; std::getline(fields, f, ',');) v.push_back(std::stod(f));
    if (v[9] > acc_max) acc_max = v[9], best_acc = epoch;
    if (v[6] < loss_min) loss_min = v[6], best_loss = epoch;
  }
  ASSERT_NE(best_acc, best_loss) << "the test needs a run where the two criteria disagree";
  EXPECT_EQ(load_safetensors(d / "ce/best.safetensors").metadata.at("epochs_done"), std::to_string(best_acc));
  const nlohmann::json config = nlohmann::json::parse(read_all(d / "ce/config.json"));
  EXPECT_EQ(config.at("checkpoint_by"), "val_accuracy");
  EXPECT_EQ(config.at("stage2"), "reload");
  EXPECT_EQ(config.at("rotate_interpolation"), "nearest");
  nlohmann::json old = config;
  for (const char* added : {"checkpoint_by", "stage2", "rotate_interpolation"}) old.erase(added);
  const app::RunConfig back = app::RunConfig::from_json(old.dump(), "old/config.json");
  EXPECT_EQ(back.checkpoint_criterion(), app::CheckpointBy::ValLoss);
  EXPECT_EQ(back.stage2, app::Stage2::Continue);
  EXPECT_EQ(back.rotate_interpolation, data::Interpolation::Bilinear);
}

// --resume keeps the run's settings: a flag that would change them is refused (naming it and the
// way to a new run), while the data's new place, the device and the worker count may change; the
// change is logged and recorded in config.json.
TEST(Train, ResumeRefusesSettingsButFollowsMovedData) {
  Dir d;
  write_mnist(d / "mnist", 12);
  ASSERT_EQ(app::run_train(tiny_config(d / "mnist", d / "cut"), "", /*stop_after_epochs=*/1), 0);
  const std::string bin = CAC_TRAIN_BIN;
  const std::string out1 =
      expect_command_fails(bin + " --resume " + (d / "cut") + " --epochs 5,5", "--epochs cannot be changed when resuming");
  EXPECT_NE(out1.find("--config " + (d / "cut") + "/config.json"), std::string::npos) << out1;
  fs::rename(d / "mnist", d / "moved");
  auto [rc_print, printed] = run_cmd(bin + " --resume " + (d / "cut") + " --data-dir " + (d / "moved") + " --print-config");
  ASSERT_EQ(rc_print, 0) << printed;
  EXPECT_EQ(app::RunConfig::from_json(printed, "printed").data_dir, (d / "moved"));  // as resuming would record it
  auto [rc2, out2] = run_cmd(bin + " --resume " + (d / "cut"));
  EXPECT_NE(rc2, 0);
  EXPECT_NE(out2.find(d / "mnist"), std::string::npos) << out2;  // names where it looked
  auto [rc3, out3] = run_cmd(bin + " --resume " + (d / "cut") + " --data-dir " + (d / "moved") + " --workers 1");
  ASSERT_EQ(rc3, 0) << out3;
  const auto c = nlohmann::json::parse(read_all(d / "cut/config.json"));
  EXPECT_EQ(c["data_dir"], (d / "moved"));
  EXPECT_EQ(c["workers"], 1);
  EXPECT_EQ(c["epochs"], nlohmann::json::parse("[1, 1]"));  // the settings as they were
  const std::string log = read_all(d / "cut/train.log");
  EXPECT_NE(log.find("resuming " + (d / "cut") + " at epoch 2 with --data-dir " + (d / "moved") + " (was " +
                     (d / "mnist") + "), --workers 1 (was 2)"), std::string::npos) << log;
}

TEST(Eval, JsonScoresAndReportFromATinyRun) {
  Dir d;
  ASSERT_NO_FATAL_FAILURE(train_tiny_run(d));
  app::EvalOptions o = cpu_eval(d / "run");
  o.json_out = d / "eval.json";
  o.scores_csv = d / "scores.csv";
  o.report_html = d / "report.html";
  ::testing::internal::CaptureStderr();
  ::testing::internal::CaptureStdout();
  const int rc = app::run_eval(o);
  const std::string table = ::testing::internal::GetCapturedStdout();
  const std::string progress = ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(rc, 0) << progress;
  // Each pass over a set says what it did, on stderr (stdout keeps the table): here not a
  // terminal, so one closing line each.
  for (const char* pass : {": training images: ", ": validation: ", ": known test: 72 images in ", ": unknown test (unknown): 48 images in "})
    EXPECT_NE(progress.find(pass), std::string::npos) << pass << " missing from:\n" << progress;
  std::ifstream jf(d / "eval.json");
  const auto j = nlohmann::json::parse(jf);
  ASSERT_EQ(j["runs"].size(), 1u);
  for (const char* k : {"accuracy", "auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr", "oscr", "ccr_at_fpr_0.1"}) {
    ASSERT_TRUE(j["runs"][0][k].is_number()) << k;
    EXPECT_GE(j["runs"][0][k].get<double>(), 0.0) << k;
    EXPECT_LE(j["runs"][0][k].get<double>(), 1.0) << k;
    EXPECT_TRUE(j["mean"][k].is_number()) << k;
    EXPECT_EQ(j["std"][k].get<double>(), 0.0) << k;  // one run
  }
  // stdout ends with the hardest unknown class (lowest AUROC of the JSON's unknown_classes).
  const auto& classes = j["runs"][0]["unknown_classes"];
  ASSERT_EQ(classes.size(), 4u);
  size_t worst = 0;
  for (size_t i = 1; i < classes.size(); ++i)
    if (classes[i]["auroc"].get<double>() < classes[worst]["auroc"].get<double>()) worst = i;
  const std::string expect_line = fmt::format("  {}: {}  AUROC {:.4f}", d / "run", classes[worst]["name"].get<std::string>(),
                                              classes[worst]["auroc"].get<double>());
  EXPECT_NE(table.find("hardest unknown class"), std::string::npos) << table;
  EXPECT_NE(table.find(expect_line), std::string::npos) << expect_line << "\n" << table;
  // 120 test images, 6 known classes (MNIST trial 0) -> 72 known + 48 unknown: 1e-4 is unresolvable.
  EXPECT_TRUE(j["runs"][0]["ccr_at_fpr_0.0001"].is_null());
  int known = 0, unknown = 0;
  // The open-set confusion in eval.json is what the threshold gives on the scores in scores.csv,
  // and that threshold is deploy.json's (what cac_predict applies).
  const auto& cm = j["runs"][0]["confusion"];
  const double threshold = j["runs"][0]["threshold"].get<double>();
  const int K = 6;
  ASSERT_EQ(cm["labels"].size(), size_t(K + 1));
  EXPECT_EQ(cm["labels"][K], "unknown");
  std::vector<std::vector<int64_t>> expect(K + 1, std::vector<int64_t>(K + 1, 0));
  for (const auto& f : read_scores_csv(d / "scores.csv")) {
    ASSERT_EQ(f.size(), 6u);
    const bool is_known = f[1] == "known";
    (is_known ? known : unknown) += 1;
    const int pred = std::stoi(f[4]);
    ++expect[is_known ? std::stoi(f[3]) : K][std::stod(f[5]) > threshold ? K : pred];
  }
  EXPECT_EQ(cm["rows"].get<std::vector<std::vector<int64_t>>>(), expect);
  std::ifstream df(d / "run/deploy.json");
  EXPECT_EQ(nlohmann::json::parse(df)["threshold"].get<double>(), threshold);
  EXPECT_EQ(known, 72);
  EXPECT_EQ(unknown, 48);
  std::ifstream rf(d / "report.html");
  const std::string html((std::istreambuf_iterator<char>(rf)), std::istreambuf_iterator<char>());
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("Loss per epoch"), std::string::npos);  // training curves from metrics.csv
  EXPECT_NE(html.find("<table class=\"cm\">"), std::string::npos);  // the confusion matrix
  EXPECT_NE(html.find("<h2>Logit space</h2>"), std::string::npos);   // and the logits in their plane
  // Every other score: its entry in by_score, its scores.csv rows, whose AUROC is the entry's (48
  // training images for 2048 feature dimensions: no mahalanobis unless asked for).
  EXPECT_EQ(j["by_score"]["orientation"], "higher = more likely unknown, for every score");
  std::vector<std::string> scorers;
  for (const auto& r : j["by_score"]["runs"]) {
    const std::string name = r["scorer"];
    scorers.push_back(name);
    std::vector<double> ks, us;
    for (const auto& f : read_scores_csv(d / "scores.csv", name)) (f[1] == "known" ? ks : us).push_back(std::stod(f[5]));
    ASSERT_EQ(ks.size(), 72u) << name;
    ASSERT_EQ(us.size(), 48u) << name;
    EXPECT_NEAR(r["auroc"].get<double>(), auroc_by_pairs(ks, us), 1e-12) << name;
    EXPECT_EQ(r["accuracy"], j["runs"][0]["accuracy"]) << name;  // the run's own prediction throughout
    EXPECT_TRUE(r["ece"].is_number()) << name;
  }
  EXPECT_EQ(scorers, (std::vector<std::string>{"cac", "msp", "mls", "energy", "knn"}));
  EXPECT_NE(html.find("<h2>Scores</h2>"), std::string::npos);
  EXPECT_NE(html.find("ROC by score"), std::string::npos);
  EXPECT_NE(table.find("scores (MNIST cac, 1 run; higher = more unknown; * the run's own):"), std::string::npos) << table;
  // --arch on cac_eval checks what the runs were trained with.
  o.arch = "resnet18";
  expect_error([&] { app::run_eval(o); }, "trained with --arch classifier32");
}



// cac_eval --precision: a run trained in float32 evaluated in bf16 (the checkpoint is float32
// either way) says so (on stderr and in eval.json) and scores within bf16's rounding of its own precision's evaluation (on 72
// known and 48 unknown test images: accuracy and AUROC within 0.05); an unknown precision is refused.
TEST(Eval, PrecisionOverrideEvaluatesARunInBf16) {
  Dir d;
  ASSERT_NO_FATAL_FAILURE(train_tiny_run(d));
  app::EvalOptions o = cpu_eval(d / "run");
  o.json_out = d / "own.json";
  ASSERT_EQ(app::run_eval(o), 0);
  o.precision = "bf16";
  o.json_out = d / "bf16.json";
  ::testing::internal::CaptureStderr();
  const int rc = app::run_eval(o);
  const std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(rc, 0) << err;
  EXPECT_NE(err.find(": evaluating in bf16 (trained in tf32)"), std::string::npos) << err;
  const auto own = nlohmann::json::parse(read_all(d / "own.json"))["runs"][0];
  const auto bf16 = nlohmann::json::parse(read_all(d / "bf16.json"))["runs"][0];
  for (const char* k : {"accuracy", "auroc"})
    EXPECT_NEAR(bf16[k].get<double>(), own[k].get<double>(), 0.05) << k;
  EXPECT_EQ(nlohmann::json::parse(read_all(d / "bf16.json"))["precision"], "bf16");
  EXPECT_EQ(nlohmann::json::parse(read_all(d / "own.json"))["precision"], "auto");
  o.precision = "fp16";
  expect_error([&] { app::run_eval(o); }, "fp16");
}

// cac_eval --accept: the deployment threshold accepts that share of the validation knowns; it is
// recorded in deploy.json and eval.json, used by the confusion matrix, and cac_predict says so.
TEST(Eval, AcceptSetsTheDeploymentThreshold) {
  Dir d;
  ASSERT_NO_FATAL_FAILURE(train_tiny_run(d));
  app::EvalOptions o = cpu_eval(d / "run");
  o.json_out = d / "eval.json";
  auto threshold_at = [&](double accept) {
    o.accept = accept;
    EXPECT_EQ(app::run_eval(o), 0);
    const auto dep = nlohmann::json::parse(read_all(d / "run/deploy.json"));
    const auto j = nlohmann::json::parse(read_all(d / "eval.json"));
    EXPECT_EQ(dep["accept"], accept);
    EXPECT_EQ(j["runs"][0]["accept"], accept);
    EXPECT_EQ(j["runs"][0]["threshold"], dep["threshold"]);
    // Knowns accepted (every column but the last, over the known rows) at this threshold.
    const auto rows = j["runs"][0]["confusion"]["rows"].get<std::vector<std::vector<int64_t>>>();
    int64_t accepted = 0, known = 0;
    for (size_t r = 0; r + 1 < rows.size(); ++r)
      for (size_t c = 0; c < rows[r].size(); ++c) known += rows[r][c], accepted += c + 1 < rows[r].size() ? rows[r][c] : 0;
    return std::make_pair(dep["threshold"].get<double>(), double(accepted) / double(known));
  };
  const auto [t95, a95] = threshold_at(0.95);
  const auto [t50, a50] = threshold_at(0.5);
  EXPECT_LT(t50, t95);  // accepting fewer knowns: a lower score threshold
  EXPECT_LT(a50, a95);  // and fewer test knowns accepted
  app::PredictOptions p;
  p.run = d / "run";
  ASSERT_TRUE(testing::write_png(d / "new/photo.png", 40, 30, 120));
  p.inputs = {d / "new"};
  p.device = "cpu";
  ::testing::internal::CaptureStdout();
  ASSERT_EQ(app::run_predict(p), 0);
  const std::string said = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(said.find("accepts 50% of the validation knowns"), std::string::npos) << said;
  o.accept = 1.5;
  expect_error([&] { app::run_eval(o); }, "--accept 1.5");
  expect_command_fails(std::string(CAC_EVAL_BIN) + " --run " + (d / "run") + " --accept 0", "--accept");
}

// cac_eval --unknown: every run is also scored against a folder of images (greyscale network: the
// colour PNGs become luma) and another dataset's test split, each its own open-set problem with
// its own metrics, scores.csv rows and report section; the run's own unknowns stay.
TEST(Eval, ExtraUnknownSetsFromAFolderAndADataset) {
  Dir d;
  ASSERT_NO_FATAL_FAILURE(train_tiny_run(d));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(testing::write_png(d / ("ood/img" + std::to_string(i) + ".png"), 40, 30, uint8_t(40 * i)));
  testing::write_mnist_idx(d / "fashion", 2);
  app::EvalOptions o = cpu_eval(d / "run");
  o.json_out = d / "eval.json";
  o.scores_csv = d / "scores.csv";
  o.report_html = d / "report.html";
  o.unknowns = {d / "ood", "fm=fashion-mnist:" + (d / "fashion")};
  ::testing::internal::CaptureStderr();
  const int rc = app::run_eval(o);
  const std::string progress = ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(rc, 0) << progress;
  EXPECT_NE(progress.find("unknown test (ood): 5 images"), std::string::npos) << progress;
  const auto j = nlohmann::json::parse(read_all(d / "eval.json"));
  ASSERT_EQ(j["runs"].size(), 3u);
  std::vector<std::string> sets;
  for (const auto& r : j["runs"]) {
    sets.push_back(r["unknown_set"].get<std::string>());
    for (const char* k : {"auroc", "oscr", "fpr_at_95_tpr"}) EXPECT_TRUE(r[k].is_number()) << sets.back() << " " << k;
    EXPECT_EQ(r["accuracy"], j["runs"][0]["accuracy"]);  // the same known test set each time
  }
  EXPECT_EQ(sets, (std::vector<std::string>{"unknown", "ood", "fm"}));
  EXPECT_EQ(j["groups"].size(), 3u);  // one per unknown set
  std::map<std::string, int> rows;
  for (const auto& f : read_scores_csv(d / "scores.csv"))
    if (f.size() == 6) ++rows[f[2]];
  EXPECT_EQ(rows["ood"], 5);
  EXPECT_EQ(rows["fm"], int(data::read_mnist_dir(d / "fashion", false, "x").size()));
  EXPECT_EQ(rows["unknown"], 48);
  const std::string html = read_all(d / "report.html");
  EXPECT_NE(html.find("ood"), std::string::npos);
  // Class by class: every unknown image counted once, the accepted ones as the confusion matrix's
  // unknown row has them, and names where the dataset has them (Fashion-MNIST's; MNIST's are digits).
  for (const auto& r : j["runs"]) {
    const auto& unknown_row = r["confusion"]["rows"].back();
    std::vector<int64_t> accepted_as(unknown_row.size() - 1, 0);
    int64_t images = 0;
    for (const auto& b : r["unknown_classes"]) {
      images += b["images"].get<int64_t>();
      const auto as = b["accepted_as"].get<std::vector<int64_t>>();
      ASSERT_EQ(as.size(), accepted_as.size());
      int64_t sum = 0;
      for (size_t k = 0; k < as.size(); ++k) accepted_as[k] += as[k], sum += as[k];
      EXPECT_EQ(sum, b["accepted"].get<int64_t>());
      EXPECT_TRUE(b["auroc"].is_number());
    }
    const std::string set = r["unknown_set"];
    EXPECT_EQ(images, rows[set]) << set;
    for (size_t k = 0; k < accepted_as.size(); ++k) EXPECT_EQ(accepted_as[k], unknown_row[k].get<int64_t>()) << set;
  }
  const auto& own = j["runs"][0]["unknown_classes"];
  ASSERT_EQ(own.size(), 4u);  // MNIST trial 0's unknowns: 3, 6, 7, 8
  EXPECT_EQ(own[0]["label"], 3);
  EXPECT_EQ(own[0]["name"], "3");
  EXPECT_EQ(j["runs"][1]["unknown_classes"][0]["name"], "ood");
  EXPECT_EQ(j["runs"][2]["unknown_classes"][0]["name"], "T-shirt/top");
  EXPECT_EQ(j["runs"][2]["unknown_classes"].size(), 10u);
  EXPECT_NE(html.find("<h2>Unknown classes</h2>"), std::string::npos);

  o.unknowns = {d / "ood", "ood=" + (d / "fashion")};
  expect_error([&] { app::run_eval(o); }, "two sets named 'ood'");
  expect_command_fails(std::string(CAC_EVAL_BIN) + " --run " + (d / "run") + " --device cpu --unknown imagenet:/x", "unknown dataset 'imagenet'");
  expect_command_fails(std::string(CAC_EVAL_BIN) + " --run " + (d / "run") + " --device cpu --unknown " + (d / "nowhere"), "nowhere: image folder not found");
}

std::pair<int, std::string> run_cmd(const std::string& cmd) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  const int status = pclose(p);
  return {WEXITSTATUS(status), out};
}

std::string read_all(const fs::path& p) {
  std::ifstream f(p);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// cac_train --config: a run's config.json repeats that run (bit for bit on the CPU), and a partial
// file varies the dataset's defaults; flags override the file, the file's relative paths are
// relative to it, and a typo, a wrong type or a changed channel count names the file and field.
TEST(Train, ConfigFileRepeatsARunAndFlagsOverrideIt) {
  Dir d;
  write_mnist(d / "mnist", 12);
  ASSERT_EQ(app::run_train(tiny_config(d / "mnist", d / "a"), ""), 0);
  const std::string bin = CAC_TRAIN_BIN;
  auto [rc, out] = run_cmd(bin + " --config " + (d / "a/config.json") + " --out " + (d / "b"));
  ASSERT_EQ(rc, 0) << out;
  const nlohmann::json ca = nlohmann::json::parse(app::read_text(d / "a/config.json"));
  nlohmann::json cb = nlohmann::json::parse(app::read_text(d / "b/config.json"));
  EXPECT_EQ(cb["out"], (d / "b"));
  cb["out"] = ca["out"];
  EXPECT_EQ(cb, ca);
  Safetensors a = load_safetensors(d / "a/last.safetensors"), b = load_safetensors(d / "b/last.safetensors");
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (auto& [name, t] : a.tensors)
    EXPECT_EQ(std::memcmp(t.raw(), b.tensors.at(name).raw(), t.nbytes()), 0) << name << " differs in the repeated run";

  // A part of a config: the file overrides the dataset's defaults (dropout, augmentation, the
  // schedule), the flags override the file, unset fields keep the defaults.
  fs::create_directories(d / "cfg");
  std::ofstream(d / "cfg/part.json") << R"({"dataset": "CIFAR10", "dropout": 0.3, "rotate_deg": 10,
      "epochs": [2], "lrs": [0.05], "seed": 3, "data_dir": "../mnist", "split_json": "split.json"})";
  auto [rc2, out2] = run_cmd("cd / && " + bin + " --config " + (d / "cfg/part.json") + " --seed 7 --print-config");
  ASSERT_EQ(rc2, 0) << out2;
  const app::RunConfig p = app::RunConfig::from_json(out2, "printed");
  EXPECT_EQ(p.dataset, "CIFAR10");
  EXPECT_EQ(p.dropout, 0.3);
  EXPECT_EQ(p.rotate_deg, 10.0);
  EXPECT_EQ(p.epochs, std::vector<int>{2});
  EXPECT_EQ(p.lrs, std::vector<double>{0.05});
  EXPECT_EQ(p.seed, 7u);                                            // the flag wins
  EXPECT_EQ(p.channels, 3);                                         // CIFAR10's
  EXPECT_EQ(p.batch, data::dataset_defaults("CIFAR10").batch);      // not in the file: the default
  EXPECT_EQ(p.data_dir, (d / "mnist"));                             // relative to the file
  EXPECT_EQ(p.split_json, (d / "cfg/split.json"));
  EXPECT_FALSE(fs::exists(d / "cfg/runs"));                         // --print-config trains nothing

  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"dropuot": 0.3})", "unknown setting 'dropuot'"},
      {R"({"dropout": "high"})", "dropout must be a number"},
      {R"({"dropout": 1.5})", "dropout must be in [0, 1)"},
      {R"({"dataset": "MNIST", "channels": 3})", "channels 3 does not match MNIST"},
      {R"([1, 2])", "expected a JSON object"},
      {R"({"seed": )", "not valid JSON"}};
  for (const auto& [text, needle] : bad) {
    std::ofstream(d / "cfg/bad.json") << text;
    const std::string said = expect_command_fails(bin + " --config " + (d / "cfg/bad.json") + " --print-config", "bad.json");
    EXPECT_NE(said.find(needle), std::string::npos) << said;
  }
  expect_command_fails(bin + " --config " + (d / "a/config.json") + " --resume " + (d / "a"), "--resume excludes --config");
}

// cac_train --init: a run started from another run's weights; with 0 epochs it holds them as they
// are, and cac_eval scores it exactly like the run it came from.
TEST(Train, InitWithZeroEpochsMakesARunOfTheGivenWeights) {
  Dir d;
  write_mnist(d / "mnist", 12);
  ASSERT_EQ(app::run_train(tiny_config(d / "mnist", d / "source"), ""), 0);
  app::RunConfig c = tiny_config(d / "mnist", d / "held");
  c.epochs = {0};
  c.lrs = {0.01};
  c.init = (d / "source/best.safetensors");
  ASSERT_EQ(app::run_train(c, ""), 0);
  const Safetensors src = load_safetensors(d / "source/best.safetensors"), held = load_safetensors(d / "held/best.safetensors");
  ASSERT_EQ(src.tensors.size(), held.tensors.size());
  for (const auto& [name, t] : src.tensors) {
    const Tensor& u = held.tensors.at(name);
    ASSERT_EQ(t.nbytes(), u.nbytes()) << name;
    EXPECT_EQ(std::memcmp(t.raw(), u.raw(), t.nbytes()), 0) << name << " changed";
  }
  EXPECT_EQ(held.metadata.at("epochs_done"), "0");
  EXPECT_TRUE(fs::exists(d / "held/last.safetensors"));
  const std::string log = read_all(d / "held/train.log");
  EXPECT_NE(log.find("starting from the weights in " + c.init), std::string::npos) << log;
  EXPECT_NE(log.find("validation of the given weights"), std::string::npos) << log;
  EXPECT_EQ(read_all(d / "held/metrics.csv").find('\n'), read_all(d / "held/metrics.csv").size() - 1);  // header only
  EXPECT_EQ(nlohmann::json::parse(read_all(d / "held/config.json"))["init"], c.init);

  // Same weights, same data: the same metrics, and a report without training curves.
  auto evaluate = [&](const std::string& run) {
    app::EvalOptions o = cpu_eval(d / run);
    o.json_out = d / (run + ".json");
    o.report_html = d / (run + ".html");
    EXPECT_EQ(app::run_eval(o), 0);
    return nlohmann::json::parse(read_all(d / (run + ".json")))["runs"][0];
  };
  const auto a = evaluate("source"), b = evaluate("held");
  for (const char* k : {"accuracy", "auroc", "oscr", "fpr_at_95_tpr"}) EXPECT_EQ(a[k], b[k]) << k;
  EXPECT_EQ(read_all(d / "held.html").find("Loss per epoch"), std::string::npos);

  // With epochs the run trains on from there (the first epoch's weights differ from the start).
  c.out = (d / "tuned");
  c.epochs = {1};
  ASSERT_EQ(app::run_train(c, ""), 0);
  const Safetensors tuned = load_safetensors(d / "tuned/last.safetensors");
  const Tensor& w0 = src.tensors.at("encoder.conv2.weight");
  const Tensor& w1 = tuned.tensors.at("encoder.conv2.weight");
  EXPECT_NE(std::memcmp(w0.raw(), w1.raw(), w0.nbytes()), 0);
  EXPECT_NE(read_all(d / "tuned/train.log").find("starting from the weights in"), std::string::npos);
}

TEST(Train, InitProblemsNameTheFile) {
  Dir d;
  write_mnist(d / "mnist", 12);
  app::RunConfig c = tiny_config(d / "mnist", d / "run");
  c.epochs = {0, 0};
  expect_error([&] { app::run_train(c, ""); }, "--epochs adds up to 0");
  c.epochs = {1, 0};
  c.init = (d / "other.safetensors");
  // Weights of another network: a 3-channel model's for this 1-channel one (the first convolution
  // differs), and a file without the head.
  app::RunConfig rgb = c;
  rgb.channels = 3;
  save_safetensors(c.init, app::build_model(rgb, 6)->state_dict(), {});
  expect_error([&] { app::run_train(c, ""); }, c.init);
  expect_error([&] { app::run_train(c, ""); }, "encoder.conv1.weight");
  save_safetensors(c.init, {{"encoder.conv1.weight", Tensor::zeros({64, 1, 3, 3})}}, {});
  expect_error([&] { app::run_train(c, ""); }, "is missing");
  // A closed-set classifier's weights (no anchors): fine for --method ce, which never reads them;
  // CAC needs its anchors.
  NamedTensorList no_anchors = app::build_model(c, 6)->state_dict();
  no_anchors.erase(std::remove_if(no_anchors.begin(), no_anchors.end(), [](const auto& nt) { return nt.first == "anchors"; }),
                   no_anchors.end());
  save_safetensors(c.init, no_anchors, {});
  expect_error([&] { app::run_train(c, ""); }, "tensor anchors is missing");
  c.method = Method::CE;
  c.epochs = {0};
  c.lrs = {0.01};
  EXPECT_EQ(app::run_train(c, ""), 0);
  std::ofstream(c.init) << "not a checkpoint";
  c.out = d / "run2";  // run/ now holds the run above
  expect_error([&] { app::run_train(c, ""); }, c.init);
}

// The PyTorch round trip of scripts/torch_interop.py, with a real PyTorch: a checkpoint of this
// engine loads into the CAC authors' classifier32 layout with a strict load_state_dict, computes
// the same logits and distances there, and comes back bit for bit. Skipped where no python3 can
// import torch (scripts/install-deps.sh --with-torch installs Debian's python3-torch).
std::string python_with_torch() { return python_with("torch"); }

// Batch-norm statistics, affine terms, the head's bias and (unless `keep_anchors`) the anchors away
// from their initial values, so that a swapped or missing tensor shows in the outputs.
void perturb(OpenSetClassifier& model, Generator& g, bool keep_anchors = false) {
  for (auto& [name, t] : model.state_dict()) {
    if (t.dtype() != DType::F32 || (keep_anchors && name == "anchors")) continue;
    float* v = t.data<float>();
    const bool positive = name.find("running_var") != std::string::npos || name.find(".weight") != std::string::npos;
    const bool bn_or_head = name.find(".bn") != std::string::npos || name.find("anchors") != std::string::npos ||
                            name.find("classify.bias") != std::string::npos;
    if (!bn_or_head) continue;
    for (int64_t i = 0; i < t.numel(); ++i)
      v[i] = positive ? float(0.5 + g.uniform()) : float(name == "anchors" ? 3 * g.normal() : 0.2 * g.normal());
  }
}

TEST(TorchInterop, CheckpointRoundTripsThroughTheAuthorsPyTorchLayout) {
  const std::string py = python_with_torch();
  if (py.empty()) GTEST_SKIP() << "no python3 here can import torch (scripts/install-deps.sh --with-torch)";
  Dir d;
  struct Shape {
    const char* arch;
    int channels, size, classes;
    const char* method;  // ce: the closed-set layout, without anchors
  };
  // (The `means` case below reuses the last file, which has anchors.)
  for (const Shape s : {Shape{"classifier32", 3, 32, 6, "ce"}, Shape{"classifier32", 3, 32, 6, "cac"},
                        Shape{"classifier32", 1, 64, 4, "cac"}, Shape{"resnet18", 3, 32, 10, "cac"}}) {
    SCOPED_TRACE(fmt::format("{}, {} channel(s), {}x{}, {} classes, {}", s.arch, s.channels, s.size, s.size, s.classes,
                             s.method));
    const bool closed_set = std::string(s.method) == "ce";
    app::RunConfig c = tiny_config("/unused", "/unused");
    c.arch = parse_arch(s.arch);
    c.channels = s.channels;
    c.image_size = s.size;
    auto model = app::build_model(c, s.classes);
    Generator g(17);
    perturb(*model, g);
    model->eval();
    Tensor x = Tensor::empty({3, s.channels, s.size, s.size});
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = float(g.normal());
    OpenSetOutput out;
    {
      NoGradGuard no_grad;
      out = model->forward(x);
    }
    const fs::path m = d / "model.safetensors", io = d / "io.safetensors", pth = d / "model.pth", back = d / "back.safetensors";
    save_safetensors(m, model->state_dict(), {{"method", s.method}});
    save_safetensors(io, {{"x", x}, {"logits", out.logits}, {"distances", out.distances}}, {});
    const std::string interop = py + " " + CAC_SOURCE_DIR + "/scripts/torch_interop.py ";
    auto [rc1, out1] = run_cmd(interop + "to-torch " + m.string() + " " + pth.string());
    ASSERT_EQ(rc1, 0) << out1;
    auto [rc2, out2] = run_cmd(py + " " + CAC_SOURCE_DIR + "/tests/torch_interop_check.py " + pth.string() + " " + io.string());
    EXPECT_EQ(rc2, 0) << out2;
    auto [rc3, out3] = run_cmd(interop + "from-torch " + pth.string() + " " + back.string());
    ASSERT_EQ(rc3, 0) << out3;
    const Safetensors b = load_safetensors(back);
    const NamedTensorList named = model->state_dict();
    EXPECT_EQ(b.tensors.size(), named.size() - (closed_set ? 1 : 0));
    EXPECT_EQ(b.tensors.count("anchors"), closed_set ? 0u : 1u) << out3;
    for (const auto& [name, t] : named) {
      if (closed_set && name == "anchors") continue;
      auto it = b.tensors.find(name);
      ASSERT_NE(it, b.tensors.end()) << name;
      ASSERT_EQ(it->second.str(), t.str()) << name;
      EXPECT_EQ(std::memcmp(it->second.raw(), t.raw(), t.nbytes()), 0) << name << " changed on the way";
    }
  }
  // The authors' evaluation also accepts checkpoints whose anchors are stored as `means`.
  const fs::path pth = d / "model.pth", means = d / "means.pth", back = d / "means.safetensors";
  auto [rcm, outm] = run_cmd(py + " -c \"import torch; c = torch.load('" + pth.string() + "'); c['net']['means'] = "
                             "c['net'].pop('anchors'); torch.save(c, '" + means.string() + "')\"");
  ASSERT_EQ(rcm, 0) << outm;
  auto [rcb, outb] = run_cmd(py + " " + CAC_SOURCE_DIR + "/scripts/torch_interop.py from-torch " + means.string() + " " +
                             back.string());
  ASSERT_EQ(rcb, 0) << outb;
  const Safetensors m = load_safetensors(back), last = load_safetensors(d / "back.safetensors");
  ASSERT_TRUE(m.tensors.count("anchors")) << outb;
  EXPECT_EQ(m.tensors.at("anchors").to_vector<float>(), last.tensors.at("anchors").to_vector<float>());
  // A file that is not a PyTorch checkpoint: exit 1 and a message naming it.
  std::ofstream(d / "bad.pth") << "garbage";
  auto [rc, msg] = run_cmd(py + " " + CAC_SOURCE_DIR + "/scripts/torch_interop.py from-torch " + (d / "bad.pth") +
                           " " + (d / "x.safetensors"));
  EXPECT_EQ(rc, 1) << msg;
  EXPECT_NE(msg.find((d / "bad.pth")), std::string::npos) << msg;
  // A corrupt safetensors file for to-torch: a short file, and a header that is JSON of the wrong shape.
  for (const std::string& bytes : {std::string("xx"), std::string("\x0b\0\0\0\0\0\0\0{\"a\": 1}   ", 19)}) {
    std::ofstream(d / "bad.safetensors", std::ios::binary) << bytes;
    auto [rcs, msgs] = run_cmd(py + " " + CAC_SOURCE_DIR + "/scripts/torch_interop.py to-torch " + (d / "bad.safetensors") +
                               " " + (d / "x.pth"));
    EXPECT_EQ(rcs, 1) << msgs;
    EXPECT_NE(msgs.find(d / "bad.safetensors"), std::string::npos) << msgs;
    EXPECT_EQ(msgs.find("Traceback"), std::string::npos) << msgs;
  }
}

// Training semantics against PyTorch: from the same weights and batches, three SGD steps of this
// engine's trainer (train-mode batch norm, the CAC loss or cross-entropy, momentum and weight
// decay) and of PyTorch (the authors' CAC loss formula or F.cross_entropy, torch.optim.SGD) give
// the same losses, parameter updates and running statistics (tolerances in
// tests/torch_interop_check.py). Dropout is 0 here: the two draw different masks.
TEST(TorchInterop, TrainingStepsMatchPyTorch) {
  const std::string py = python_with_torch();
  if (py.empty()) GTEST_SKIP() << "no python3 here can import torch (scripts/install-deps.sh --with-torch)";
  Dir d;
  for (const auto& [arch, method] : std::vector<std::pair<std::string, Method>>{
           {"classifier32", Method::CAC}, {"classifier32", Method::CE}, {"classifier32", Method::CACLearnt},
           {"resnet18", Method::CAC}}) {
    SCOPED_TRACE(arch + ", " + method_name(method));
    app::RunConfig c = tiny_config("/unused", "/unused");
    c.arch = parse_arch(arch);
    c.method = method;  // cac-learnt makes the anchors trainable
    c.channels = 3;
    c.dropout = 0;
    const int K = 6, B = 8, steps = 3;
    const double lr = 0.01, momentum = 0.9, weight_decay = 5e-4, lambda = 0.1;
    auto model = app::build_model(c, K);
    Generator g(23);
    perturb(*model, g, /*keep_anchors=*/true);  // CAC trains against the fixed alpha * e_i anchors
    save_safetensors(d / "init.safetensors", model->state_dict(), {});
    Tensor x = Tensor::empty({steps, B, 3, 32, 32}), y = Tensor::empty({steps, B}, DType::I64);
    Tensor losses = Tensor::empty({steps});
    // One batch, seen three times: the loss falls, so the steps stay well conditioned (fresh random
    // batches at this learning rate make the loss climb, and the two trajectories then amplify
    // float32 rounding differences into percent-level ones).
    const int64_t per = int64_t(B) * 3 * 32 * 32;
    for (int64_t i = 0; i < per; ++i) x.data<float>()[i] = float(g.normal());
    for (int i = 0; i < B; ++i) y.data<int64_t>()[i] = int64_t(g.below(K));
    for (int s = 1; s < steps; ++s) {
      std::copy_n(x.data<float>(), per, x.data<float>() + s * per);
      std::copy_n(y.data<int64_t>(), B, y.data<int64_t>() + s * B);
    }
    Trainer trainer(model, method, lambda, momentum, weight_decay);
    for (int s = 0; s < steps; ++s) {
      StepTotals totals;
      totals.reset(DType::F32, Device::CPU);
      const Tensor xs = Tensor::from_vector(std::vector<float>(x.data<float>() + s * per, x.data<float>() + (s + 1) * per),
                                            {B, 3, 32, 32});
      Tensor ys = Tensor::empty({B}, DType::I64);
      std::copy_n(y.data<int64_t>() + s * B, B, ys.data<int64_t>());
      trainer.step(xs, ys, lr, totals);
      losses.data<float>()[s] = float(totals.means().loss);
    }
    save_safetensors(d / "after.safetensors", model->state_dict(), {});
    save_safetensors(d / "io.safetensors", {{"x", x}, {"y", y}, {"losses", losses}}, {});
    auto [rc1, out1] = run_cmd(py + " " + CAC_SOURCE_DIR + "/scripts/torch_interop.py to-torch " +
                               (d / "init.safetensors") + " " + (d / "init.pth"));
    ASSERT_EQ(rc1, 0) << out1;
    auto [rc2, out2] = run_cmd(fmt::format("{} {}/tests/torch_interop_check.py --train {} {} {} {} {} {} {} {}", py,
                                           CAC_SOURCE_DIR, method_name(method), lr, momentum,
                                           weight_decay, lambda, d / "init.pth", d / "io.safetensors",
                                           d / "after.safetensors"));
    EXPECT_EQ(rc2, 0) << out2;
  }
}

// Issue 23: the training set held on the device and augmented there (apps/device_batches.h). On
// the CPU the same class runs the augmentation kernel's twin: it must hand out the host Loader's
// batches bit for bit (same order, same draws, the short last batch), epoch after epoch.
TEST(DeviceBatches, OnTheCpuTheyAreTheLoadersBatches) {
  data::ImageSet s;
  s.name = "synthetic";
  s.images = Tensor::empty({70, 28, 28, 1}, DType::U8);
  for (int64_t i = 0; i < s.images.numel(); ++i) s.images.data<uint8_t>()[i] = uint8_t(i * 37 + i / 784);
  std::vector<int64_t> labels(70);
  for (int i = 0; i < 70; ++i) labels[size_t(i)] = i % 4;
  s.labels = Tensor::from_vector(labels, {70});
  data::Subset sub;  // every other image: the rows gathered are not the positions
  sub.source = &s;
  for (int i = 1; i < 70; i += 2) sub.indices.push_back(i), sub.labels.push_back(labels[size_t(i)]);
  data::Augment a{32, true, 0.7, 0.5, 15, data::Interpolation::Nearest, false, 0, 0, {0.4f}, {0.3f}};
  data::Loader::Options o;
  o.batch = 8;
  o.seed = 12;
  o.workers = 2;
  data::Loader host(sub, a, o);
  app::DeviceBatches dev(sub, a, o, Device::CPU);
  ASSERT_EQ(dev.batches_per_epoch(), host.batches_per_epoch());
  for (int epoch : {0, 3}) {
    host.start_epoch(epoch);
    dev.start_epoch(epoch);
    data::Batch hb, db;
    int batches = 0;
    while (host.next(&hb)) {
      ASSERT_TRUE(dev.next(&db)) << epoch << " " << batches;
      EXPECT_EQ(db.labels.to_vector<int64_t>(), hb.labels.to_vector<int64_t>()) << epoch << " " << batches;
      EXPECT_EQ(db.images.shape(), hb.images.shape());
      EXPECT_EQ(db.images.to_vector<float>(), hb.images.to_vector<float>()) << epoch << " " << batches;
      ++batches;
    }
    EXPECT_FALSE(dev.next(&db));
    EXPECT_EQ(batches, 5);  // 35 images: four of 8 and one of 3
  }
  // Validation's batches (no augmentation, no shuffle) from the same source set, sharing its copy.
  data::Augment e = a;
  e.train = false;
  data::Subset val;
  val.source = &s;
  for (int i = 0; i < 70; i += 3) val.indices.push_back(i), val.labels.push_back(labels[size_t(i)]);
  o.shuffle = false;
  data::Loader host_val(val, e, o);
  app::DeviceBatches dev_val(val, e, o, Device::CPU, &dev);
  host_val.start_epoch(0);
  dev_val.start_epoch(0);
  data::Batch hb, db;
  int val_batches = 0;
  while (host_val.next(&hb)) {
    ASSERT_TRUE(dev_val.next(&db));
    EXPECT_EQ(db.labels.to_vector<int64_t>(), hb.labels.to_vector<int64_t>()) << val_batches;
    EXPECT_EQ(db.images.to_vector<float>(), hb.images.to_vector<float>()) << val_batches;
    ++val_batches;
  }
  EXPECT_FALSE(dev_val.next(&db));
  EXPECT_EQ(val_batches, 3);  // 24 images
  a.randaugment_n = 2;
  EXPECT_EQ(app::DeviceBatches::host_only_reason(sub, a, Device::CUDA), "RandAugment runs on the host loader");
  a.randaugment_n = 0;
  EXPECT_EQ(app::DeviceBatches::host_only_reason(sub, a, Device::CPU), "the CPU trains from the host loader");
  EXPECT_EQ(app::DeviceBatches::device_bytes(sub), 70u * 784u);
}

// The strong-baseline recipe (issue 24, item 3) through cac_train's flags: the cosine schedule's
// rates in metrics.csv (by hand: 3 epochs, 1 of warm-up, no restart, base 0.1 -> 0.1, 0.1, then
// half way down to 1e-4: 0.05005), label smoothing reaching the CE loss, RandAugment on the
// training images, all recorded in config.json and train.log; resumable like any run.
TEST(Train, StrongBaselineRecipeFromFlags) {
  Dir d;
  write_mnist(d / "mnist", 12);
  const std::string base = std::string(CAC_TRAIN_BIN) + " --dataset MNIST --data-dir " + (d / "mnist") +
                           " --method ce --train-limit 48 --batch 16 --device cpu --workers 2 --seed 5 --epochs 3 --lr 0.1";
  const std::string recipe = " --lr-schedule cosine --warmup-epochs 1 --label-smoothing 0.5 --randaugment 2,9";
  auto [rc, out] = run_cmd(base + recipe + " --out " + (d / "recipe"));
  ASSERT_EQ(rc, 0) << out;
  auto [rc0, out0] = run_cmd(base + " --out " + (d / "plain"));
  ASSERT_EQ(rc0, 0) << out0;
  auto column = [&](const std::string& run, size_t col) {
    std::vector<double> v;
    std::ifstream f(d / (run + "/metrics.csv"));
    std::string line;
    std::getline(f, line);
    while (std::getline(f, line)) {
      std::stringstream ls(line);
      std::string x;
      for (size_t i = 0; i <= col; ++i) std::getline(ls, x, ',');
      v.push_back(std::stod(x));
    }
    return v;
  };
  const std::vector<double> lr = column("recipe", 1);
  ASSERT_EQ(lr.size(), 3u);
  EXPECT_NEAR(lr[0], 0.1, 1e-12);
  EXPECT_NEAR(lr[1], 0.1, 1e-12);
  EXPECT_NEAR(lr[2], 0.05005, 1e-12);
  EXPECT_EQ(column("plain", 1), (std::vector<double>{0.1, 0.1, 0.1}));
  // Smoothing 0.5 with 10 classes puts a floor under the loss: at least the entropy-like term
  // 0.5 (logsumexp - mean logit) >= 0; the first epoch's loss differs from the plain run's.
  EXPECT_NE(column("recipe", 2)[0], column("plain", 2)[0]);
  const app::RunConfig c = app::RunConfig::from_json(read_all(d / "recipe/config.json"), "config.json");
  EXPECT_EQ(c.lr_schedule, LrShape::Cosine);
  EXPECT_EQ(c.warmup_epochs, 1);
  EXPECT_EQ(c.label_smoothing, 0.5);
  EXPECT_EQ(c.randaugment, (std::vector<int>{2, 9}));
  EXPECT_NE(read_all(d / "recipe/train.log").find("recipe: cosine learning rate from 0.1 (1 warm-up epochs, 0 "
                                                  "restarts); label smoothing 0.5; RandAugment N=2 M=9"),
            std::string::npos) << read_all(d / "recipe/train.log");
  // A config.json from before these fields reads as the protocol's plain run.
  nlohmann::json old = nlohmann::json::parse(read_all(d / "plain/config.json"));
  for (const char* k : {"lr_schedule", "warmup_epochs", "restarts", "label_smoothing", "randaugment"}) old.erase(k);
  const app::RunConfig o = app::RunConfig::from_json(old.dump(), "old.json");
  EXPECT_EQ(o.lr_schedule, LrShape::Step);
  EXPECT_TRUE(o.randaugment.empty());
  // Bad values, refused in words.
  for (const auto& [flags, says] : std::vector<std::pair<std::string, std::string>>{
           {" --randaugment 2", "give N,M"},
           {" --randaugment 15,9", "give N,M"},
           {" --randaugment 2,31", "outside N 1-14 then M 0-30"},
           {" --warmup-epochs 2", "belong to lr_schedule cosine"},
           {" --lr-schedule cosine --warmup-epochs 3", "fewer than the 1 cosine cycles"},
           {" --label-smoothing 1", "label smoothing must be in [0, 1)"}}) {
    auto [brc, bout] = run_cmd(base + flags + " --print-config");
    EXPECT_NE(brc, 0) << flags;
    EXPECT_NE(bout.find(says), std::string::npos) << flags << "\n" << bout;
  }
  auto [crc, cout_] = run_cmd(std::string(CAC_TRAIN_BIN) + " --dataset MNIST --data-dir " + (d / "mnist") +
                              " --label-smoothing 0.1 --print-config");
  EXPECT_NE(crc, 0);
  EXPECT_NE(cout_.find("applies to the CE baseline"), std::string::npos) << cout_;
}

// The PyTorch training peer (bench/torch_train.py, issue 23) runs the protocol end to end on tiny
// MNIST-format data on the CPU, with and without loader processes, and says what it ran.
TEST(TorchTrain, PeerRunsTheProtocolOnTinyDataOnTheCpu) {
  const std::string py = python_with_torch();
  if (py.empty()) GTEST_SKIP() << "no python3 here can import torch (scripts/install-deps.sh --with-torch)";
  Dir d;
  write_mnist(d / "mnist", 12);
  const std::string script = std::string(CAC_SOURCE_DIR) + "/bench/torch_train.py --data-dir " + (d / "mnist") +
                             " --device cpu --epochs 1,1 --batch 16 --transforms torch";
  for (const char* workers : {"0", "2"}) {
    auto [rc, out] = run_cmd(py + " " + script + " --workers " + workers + " --method " +
                             (std::string(workers) == "0" ? "cac" : "ce"));
    ASSERT_EQ(rc, 0) << out;
    const size_t at = out.find("result: ");
    ASSERT_NE(at, std::string::npos) << out;
    const auto r = nlohmann::json::parse(out.substr(at + 8, out.find('\n', at) - at - 8));
    EXPECT_EQ(r["epochs"], 2);
    EXPECT_EQ(r["transforms"], "torch");
    EXPECT_EQ(r["workers"], std::stoi(workers));
    EXPECT_GE(r["accuracy"].get<double>(), 0.0);
    EXPECT_LE(r["auroc"].get<double>(), 1.0);
    EXPECT_NE(out.find("epoch   2 lr 0.001"), std::string::npos) << out;  // the second stage's rate
  }
  auto [rc, out] = run_cmd(py + " " + script + " --epochs 1,1 --lr 0.1");
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("the same number of stages"), std::string::npos) << out;
}

// The step comparison's PyTorch side (bench/torch_step.py) in the settings gpu-check times, with tiny
// sizes on the CPU: fp32 and bf16 autocast + channels-last give a finite loss and a result line;
// modes the CPU or this PyTorch cannot run are refused in words (exit 2).
TEST(TorchStep, FastSettingsRunOrAreRefusedInWords) {
  const std::string py = python_with_torch();
  if (py.empty()) GTEST_SKIP() << "no python3 here can import torch (scripts/install-deps.sh --with-torch)";
  const std::string script = std::string(CAC_SOURCE_DIR) + "/bench/torch_step.py --device cpu --batch 4 --iters 1 --warmup 1";
  for (const char* extra : {"", " --amp bf16 --channels-last"}) {
    auto [rc, out] = run_cmd(py + " " + script + extra);
    ASSERT_EQ(rc, 0) << extra << "\n" << out;
    const size_t at = out.find("result: ");
    ASSERT_NE(at, std::string::npos) << out;
    const auto r = nlohmann::json::parse(out.substr(at + 8, out.find('\n', at) - at - 8));
    EXPECT_EQ(r["amp"], std::string(extra).empty() ? "none" : "bf16");
    EXPECT_EQ(r["channels_last"], !std::string(extra).empty());
    EXPECT_TRUE(std::isfinite(r["loss"].get<double>())) << out;
    EXPECT_GT(r["images_per_s"].get<double>(), 0.0);
  }
  auto [rc, out] = run_cmd(py + " " + script + " --mode graph");
  EXPECT_EQ(rc, 2);
  EXPECT_NE(out.find("--mode graph records CUDA work: add --device cuda"), std::string::npos) << out;
}

// Your own data: an image folder with a named split, through cac_train and cac_eval.
TEST(ImageFolder, TrainAndEvaluateOwnData) {
  Dir d;
  testing::write_image_folder(d / "pets", {"bird", "cat", "dog"}, 8, 4, 24, 24);
  std::ofstream(d / "split.json") << R"({"known": ["cat", "dog"], "unknown": ["bird"]})";
  const std::string bin = CAC_TRAIN_BIN;
  auto [rc, out] = run_cmd(bin + " --dataset ImageFolder --data-dir " + (d / "pets") + " --split " + (d / "split.json") +
                           " --image-size 32 --epochs 1 --lr 0.01 --batch 4 --device cpu --workers 2 --out " + (d / "run"));
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("known classes: 0=cat, 1=dog; unknown: bird"), std::string::npos) << out;
  app::EvalOptions o = cpu_eval(d / "run");
  o.json_out = d / "eval.json";
  ASSERT_EQ(app::run_eval(o), 0);
  std::ifstream jf(d / "eval.json");
  const auto j = nlohmann::json::parse(jf);
  EXPECT_TRUE(j["runs"][0]["auroc"].is_number());
  EXPECT_TRUE(j["runs"][0]["accuracy"].is_number());

  // cac_predict on new images, with what cac_eval left in the run (deploy.json).
  ASSERT_TRUE(fs::exists(d / "run/deploy.json"));
  app::PredictOptions p;
  p.run = d / "run";
  ASSERT_TRUE(testing::write_png(d / "new/photo.png", 40, 30, 120));  // PNGs too, at another size
  p.inputs = {d / "pets/test/bird", d / "pets/test/cat/img0.jpg", d / "new"};
  p.device = "cpu";
  p.csv = d / "pred.csv";
  ASSERT_EQ(app::run_predict(p), 0);
  std::ifstream pf(d / "pred.csv");
  std::string line;
  std::getline(pf, line);
  EXPECT_EQ(line, "path,prediction,class,score,verdict,error");
  int rows = 0;
  while (std::getline(pf, line)) {
    ++rows;
    EXPECT_TRUE(line.find(",cat,") != std::string::npos || line.find(",dog,") != std::string::npos) << line;
    EXPECT_TRUE(line.size() > 7 && (line.rfind(",known,") == line.size() - 7 || line.rfind(",unknown,") == line.size() - 9)) << line;
  }
  EXPECT_EQ(rows, 6);  // 4 bird images (a folder, searched) + 1 file + the PNG (a folder)
  p.threshold = 1e9;  // nothing scores above it: every image is called known
  ASSERT_EQ(app::run_predict(p), 0);
  std::ifstream pf2(d / "pred.csv");
  const std::string all((std::istreambuf_iterator<char>(pf2)), std::istreambuf_iterator<char>());
  EXPECT_EQ(all.find(",unknown"), std::string::npos);
  // Bad input: not an image (a row saying why, exit code 2), and a run cac_eval has not seen.
  std::ofstream(d / "junk.jpg") << "not a jpeg";
  p.inputs = {d / "junk.jpg"};
  EXPECT_EQ(app::run_predict(p), 2);
  EXPECT_NE(read_all(d / "pred.csv").find("junk.jpg,,,,error,"), std::string::npos) << read_all(d / "pred.csv");
  fs::remove(d / "run/deploy.json");
  p.inputs = {d / "pets/test/bird"};
  expect_error([&] { app::run_predict(p); }, "cac_eval --run");  // no deploy.json: says what to run
}

// cac_eval --deploy-score (issue 24, item 2): deploy.json thresholds any score, and cac_predict gives
// each test image the score cac_eval wrote for it in scores.csv (the knn bank and the Mahalanobis
// whitening read back from the score file beside deploy.json). A CE run, whose default is mls.
TEST(ImageFolder, DeployWithAnyScore) {
  Dir d;
  testing::write_image_folder(d / "pets", {"bird", "cat", "dog"}, 8, 4, 24, 24);
  std::ofstream(d / "split.json") << R"({"known": ["cat", "dog"], "unknown": ["bird"]})";
  auto [rc, out] = run_cmd(std::string(CAC_TRAIN_BIN) + " --dataset ImageFolder --data-dir " + (d / "pets") +
                           " --split " + (d / "split.json") + " --method ce --image-size 32 --epochs 1 --lr 0.01 "
                           "--batch 4 --device cpu --workers 2 --out " + (d / "run"));
  ASSERT_EQ(rc, 0) << out;
  app::PredictOptions p;
  p.run = d / "run";
  p.inputs = {d / "pets/test/bird"};
  p.device = "cpu";
  p.csv = d / "pred.csv";
  for (const char* score : {"auto", "knn", "mahalanobis", "cac", "energy"}) {
    app::EvalOptions o = cpu_eval(d / "run");
    o.deploy_score = score;
    o.scores = "cac";  // the deployed score is computed whatever --scores says
    o.scores_csv = d / "scores.csv";
    o.json_out = d / "eval.json";
    ASSERT_EQ(app::run_eval(o), 0) << score;
    const std::string name = std::string(score) == "auto" ? "mls" : score;
    const auto dep = nlohmann::json::parse(read_all(d / "run/deploy.json"));
    EXPECT_EQ(dep["score"], name);
    const auto j = nlohmann::json::parse(read_all(d / "eval.json"));
    EXPECT_EQ(j["runs"][0]["scorer"], "msp");  // the protocol's CE baseline stays the run's own
    EXPECT_EQ(j["runs"][0]["deploy_score"], name);
    EXPECT_EQ(j["runs"][0]["threshold"], dep["threshold"]);
    const bool has_file = name == "knn" || name == "mahalanobis";
    EXPECT_EQ(fs::exists(d / ("run/deploy-" + name + ".safetensors")), has_file) << name;
    std::vector<double> expect, got;
    for (const auto& row : read_scores_csv(d / "scores.csv", name))
      if (row[1] == "unknown") expect.push_back(std::stod(row[5]));
    ASSERT_EQ(app::run_predict(p), 0) << name;
    std::ifstream pf(d / "pred.csv");
    std::string line;
    std::getline(pf, line);
    while (std::getline(pf, line)) {
      std::vector<std::string> f;
      std::stringstream ls(line);
      for (std::string x; std::getline(ls, x, ',');) f.push_back(x);
      ASSERT_GE(f.size(), 4u) << line;
      got.push_back(std::stod(f[3]));
    }
    std::sort(expect.begin(), expect.end());
    std::sort(got.begin(), got.end());
    ASSERT_EQ(got.size(), expect.size()) << name;
    for (size_t i = 0; i < got.size(); ++i)  // the CSV keeps 6 significant digits
      EXPECT_NEAR(got[i], expect[i], 1e-5 * std::fabs(expect[i]) + 1e-5) << name << " " << i;
  }
  EXPECT_FALSE(fs::exists(d / "run/deploy-mahalanobis.safetensors"));  // the last deployment needs none
  // A score file from another evaluation, or none: refused, naming the file and what to do.
  app::EvalOptions o = cpu_eval(d / "run");
  o.deploy_score = "knn";
  ASSERT_EQ(app::run_eval(o), 0);
  auto dep = nlohmann::json::parse(read_all(d / "run/deploy.json"));
  dep["score_id"] = "0123456789abcdef";
  std::ofstream(d / "run/deploy.json", std::ios::trunc) << dep.dump();
  expect_error([&] { app::run_predict(p); }, "deploy-knn.safetensors: written by another evaluation");
  fs::remove(d / "run/deploy-knn.safetensors");
  expect_error([&] { app::run_predict(p); }, "deploy-knn.safetensors: missing");
}

// The experiment at FP operating points, as documented (scripts/fp-operating-points.sh), on tiny
// CIFAR-format and SVHN-format files: ResNet-18 trained with CAC and CE, evaluated on both unknown sets.
TEST(FpOperatingPoints, ScriptRunsEndToEndOnSyntheticFiles) {
  Dir d;
  testing::write_fp_operating_point_files(d / "data", /*train_per_class=*/1, /*test_per_class=*/2, /*svhn=*/30);
  const std::string bin_dir = fs::path(CAC_TRAIN_BIN).parent_path().string();
  auto [rc, out] = run_cmd("CAC_BIN_DIR=" + bin_dir + " bash " + CAC_SOURCE_DIR + "/scripts/fp-operating-points.sh " + (d / "data") +
                           " " + (d / "fp") + " --epochs 1 --lr 0.01 --batch 8 --device cpu --workers 2 --seed 3");
  ASSERT_EQ(rc, 0) << out;
  std::ifstream cf(d / "fp/cac/config.json");
  const auto cfg = nlohmann::json::parse(cf);
  EXPECT_EQ(cfg["arch"], "resnet18");
  EXPECT_EQ(cfg["dataset"], "CIFAR10-FP");
  std::ifstream jf(d / "fp/fp-operating-points.json");
  const auto j = nlohmann::json::parse(jf);
  ASSERT_EQ(j["runs"].size(), 4u);  // {cac, ce} x {SVHN test, CIFAR-100 superclasses}
  std::map<std::string, int> sets;
  for (const auto& r : j["runs"]) {
    ++sets[r["unknown_set"].get<std::string>()];
    for (const char* k : {"auroc", "oscr", "ccr_at_fpr_0.1"}) EXPECT_TRUE(r[k].is_number()) << r.dump();
    // 30 SVHN and 45 CIFAR-100 unknowns cannot resolve FPR 1e-2 or below: n/a, never extrapolated.
    for (const char* k : {"ccr_at_fpr_0.01", "ccr_at_fpr_0.001", "ccr_at_fpr_0.0001"}) EXPECT_TRUE(r[k].is_null()) << r.dump();
  }
  EXPECT_EQ(sets["SVHN test"], 2);
  EXPECT_EQ(sets["CIFAR-100 superclasses"], 2);
  EXPECT_EQ(j["groups"].size(), 4u);
  EXPECT_NE(out.find("SVHN test"), std::string::npos) << out;  // the table on stdout
  std::ifstream rf(d / "fp/fp-operating-points.html");
  const std::string html((std::istreambuf_iterator<char>(rf)), std::istreambuf_iterator<char>());
  EXPECT_NE(html.find("CIFAR-100 superclasses"), std::string::npos);
  EXPECT_NE(html.find("OSCR, log FPR"), std::string::npos);
  // Run again: both runs are complete, so training resumes at its end and only evaluation repeats;
  // with --gpus the two resume side by side (--device auto: the CPU here), each with its log.
  auto [rc2, out2] = run_cmd("CAC_BIN_DIR=" + bin_dir + " bash " + CAC_SOURCE_DIR + "/scripts/fp-operating-points.sh " +
                             (d / "data") + " " + (d / "fp") + " --gpus 0,1");
  EXPECT_EQ(rc2, 0) << out2;
  EXPECT_NE(out2.find("== ce: on GPU 1 (CUDA_VISIBLE_DEVICES=1; log: "), std::string::npos) << out2;
  EXPECT_NE(out2.find("== cac: done on GPU 0"), std::string::npos) << out2;
  EXPECT_NE(read_all(d / "fp/logs/ce.log").find("resum"), std::string::npos) << read_all(d / "fp/logs/ce.log");
}

// scripts/benchmark.sh: trials x methods trained (or resumed) and evaluated together, on synthetic
// MNIST files.
// CIFAR+50 as the authors report it: `benchmark.sh CIFAR+50` trains the CIFAR+10 networks (or
// finds them) and evaluates the same networks twice, against CIFAR+10's 10 and CIFAR+50's 50
// unknown classes (one image each in these fake files); cac_train refuses to train CIFAR+50 on its
// own without --force-train, and cac_eval --benchmark CIFAR+50 takes only CIFAR+10 runs.
TEST(Benchmark, CifarPlus50EvaluatesTheCifarPlus10Networks) {
  Dir d;
  testing::write_fp_operating_point_files(d / "data", /*train_per_class=*/2, /*test_per_class=*/2, /*svhn=*/1);
  const std::string bin_dir = fs::path(CAC_TRAIN_BIN).parent_path().string();
  auto [rc, out] = run_cmd("CAC_BIN_DIR=" + bin_dir + " bash " + CAC_SOURCE_DIR + "/scripts/benchmark.sh CIFAR+50 " +
                           (d / "data") + " " + (d / "bench") +
                           " --trials 0 --methods cac --epochs 1,1 --batch 8 --device cpu --workers 2");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(nlohmann::json::parse(read_all(d / "bench/cac-t0/config.json"))["dataset"], "CIFAR+10");
  EXPECT_FALSE(fs::exists(d / "bench/cac-t0-CIFAR+50"));
  for (const auto& [bench, unknowns] : std::vector<std::pair<std::string, int>>{{"CIFAR+10", 10}, {"CIFAR+50", 50}}) {
    const auto j = nlohmann::json::parse(read_all(d / ("bench/" + bench + ".json")));
    ASSERT_EQ(j["groups"].size(), 1u) << bench;
    EXPECT_EQ(j["groups"][0]["dataset"], bench);
    EXPECT_EQ(j["runs"][0]["run"], d / "bench/cac-t0");  // the same network both times
    const std::string csv = read_all(d / (bench == "CIFAR+10" ? "bench/scores.csv" : "bench/scores-CIFAR+50.csv"));
    int rows = 0;
    std::istringstream lines(csv);
    for (std::string line; std::getline(lines, line);) rows += line.find(",unknown,") != std::string::npos &&
                                                              line.find(",cac,") != std::string::npos;
    EXPECT_EQ(rows, unknowns) << bench;
  }
  auto [rc2, out2] = run_cmd(std::string(CAC_TRAIN_BIN) + " --dataset CIFAR+50 --data-dir " + (d / "data") + " --out " +
                             (d / "plus50") + " --device cpu");
  EXPECT_NE(rc2, 0);
  EXPECT_NE(out2.find("cac_eval --run RUN --benchmark CIFAR+50"), std::string::npos) << out2;
  EXPECT_NE(out2.find("--force-train"), std::string::npos) << out2;
  EXPECT_FALSE(fs::exists(d / "plus50/config.json"));
  train_tiny_run(d);  // an MNIST run
  app::EvalOptions o = cpu_eval(d / "run");
  o.benchmark = "CIFAR+50";
  expect_error([&] { app::run_eval(o); }, "with the CIFAR+10 runs");
}

TEST(Benchmark, ScriptTrainsEveryTrialAndMethodAndSummarises) {
  Dir d;
  write_mnist(d / "mnist", 12);
  const std::string bin_dir = fs::path(CAC_TRAIN_BIN).parent_path().string();
  const std::string script = "CAC_BIN_DIR=" + bin_dir + " bash " + CAC_SOURCE_DIR + "/scripts/benchmark.sh MNIST " +
                             (d / "mnist") + " " + (d / "bench");
  // Settings without a flag come through --config (the script's own flags still win: trial, method).
  std::ofstream(d / "ablation.json") << R"({"dropout": 0.1, "trial": 4, "method": "ce"})";
  const std::string flags = " --epochs 1 --lr 0.01 --batch 16 --train-limit 48 --device cpu --workers 2 --seed 3"
                            " --config " + (d / "ablation.json");
  auto [rc, out] = run_cmd(script + " --trials 0,1 --methods cac,ce" + flags);
  ASSERT_EQ(rc, 0) << out;
  const auto j = nlohmann::json::parse(read_all(d / "bench/MNIST.json"));
  ASSERT_EQ(j["runs"].size(), 4u);  // {t0, t1} x {cac, ce}
  ASSERT_EQ(j["groups"].size(), 2u);  // per method: mean and std over the two trials
  for (const auto& g : j["groups"]) {
    EXPECT_EQ(g["runs"], 2) << g.dump();
    EXPECT_TRUE(g["mean"]["auroc"].is_number()) << g.dump();
    EXPECT_TRUE(g["std"]["auroc"].is_number()) << g.dump();
  }
  EXPECT_EQ(nlohmann::json::parse(read_all(d / "bench/ce-t1/config.json"))["trial"], 1);
  const auto cac_t0 = nlohmann::json::parse(read_all(d / "bench/cac-t0/config.json"));
  EXPECT_EQ(cac_t0["dropout"], 0.1);
  EXPECT_EQ(cac_t0["trial"], 0);
  EXPECT_EQ(cac_t0["method"], "cac");
  EXPECT_NE(read_all(d / "bench/MNIST.html").find("<svg"), std::string::npos);
  EXPECT_NE(out.find("ce-t1"), std::string::npos) << out;  // the table on stdout
  // Again, with the data moved: every run is complete, so training resumes at its end (finding the
  // data where the command now says it is) and only evaluation repeats.
  fs::rename(d / "mnist", d / "moved");
  const std::string moved_script = "CAC_BIN_DIR=" + bin_dir + " bash " + CAC_SOURCE_DIR + "/scripts/benchmark.sh MNIST " +
                                   (d / "moved") + " " + (d / "bench");
  auto [rc2, out2] = run_cmd(moved_script + " --trials 0,1 --methods cac,ce --device cpu --workers 1");
  EXPECT_EQ(rc2, 0) << out2;
  EXPECT_EQ(out2.find("epoch   1/1"), std::string::npos) << out2;
  EXPECT_EQ(nlohmann::json::parse(read_all(d / "bench/ce-t1/config.json"))["data_dir"], (d / "moved"));
  // Bad arguments: exit 2 and say which.
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {" --trials 0,7", "trial '7'"}, {" --methods cac,svm", "method 'svm'"}, {" --out x", "--out is set by"},
           {" --print-config", "--print-config"}}) {
    auto [rc3, msg] = run_cmd(script + args);
    EXPECT_EQ(rc3, 2) << args << ": " << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

// Every program names the engine that it is: version, source revision, build type and the CUDA
// libraries it loaded (a CPU-only build says so); train.log and eval.json record the same line.
// --gpus: one run per listed GPU at a time, each with its own log; a run that fails is named with
// the end of its log, and nothing is evaluated. (Without a GPU, --device auto trains on the CPU.)
TEST(Benchmark, GpusTrainRunsSideBySide) {
  Dir d;
  write_mnist(d / "mnist", 12);
  const std::string bin_dir = fs::path(CAC_TRAIN_BIN).parent_path().string();
  auto script = [&](const fs::path& out) {
    return "CAC_BIN_DIR=" + bin_dir + " bash " + CAC_SOURCE_DIR + "/scripts/benchmark.sh MNIST " + (d / "mnist") + " " +
           out.string();
  };
  const std::string flags = " --trials 0 --methods cac,ce --epochs 1 --lr 0.01 --batch 16 --train-limit 48 --seed 3";
  auto [rc, out] = run_cmd(script(d / "bench") + flags + " --gpus 0,1");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("== cac-t0: on GPU 0 (CUDA_VISIBLE_DEVICES=0; log: "), std::string::npos) << out;
  EXPECT_NE(out.find("== ce-t0: on GPU 1 (CUDA_VISIBLE_DEVICES=1; log: "), std::string::npos) << out;
  EXPECT_NE(out.find("== ce-t0: done on GPU 1"), std::string::npos) << out;
  EXPECT_NE(read_all(d / "bench/logs/cac-t0.log").find("epoch   1/1"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(read_all(d / "bench/MNIST.json"))["runs"].size(), 2u);
  // The loader threads are shared out between the two runs.
  auto [nrc, nproc] = run_cmd("nproc");
  ASSERT_EQ(nrc, 0);
  const int share = std::max(1, std::stoi(nproc) / 2);
  EXPECT_EQ(nlohmann::json::parse(read_all(d / "bench/ce-t0/config.json"))["workers"], share);

  fs::create_directories(d / "broken");
  std::ofstream(d / "broken/ce-t0") << "a file where the run folder goes";
  // Under a scheduler's allocation (CUDA_VISIBLE_DEVICES set), GPU numbers count the visible GPUs.
  auto [rc2, out2] = run_cmd("CUDA_VISIBLE_DEVICES=7,5 " + script(d / "broken") + flags + " --gpus 1");
  EXPECT_NE(out2.find("== cac-t0: on GPU 1 (CUDA_VISIBLE_DEVICES=5; log: "), std::string::npos) << out2;
  EXPECT_EQ(rc2, 1) << out2;
  EXPECT_NE(out2.find("== ce-t0: FAILED on GPU 1"), std::string::npos) << out2;
  EXPECT_NE(out2.find("Not a directory"), std::string::npos) << out2;  // the end of its log
  EXPECT_NE(out2.find("1 run(s) failed: ce-t0"), std::string::npos) << out2;
  EXPECT_TRUE(fs::exists(d / "broken/cac-t0/best.safetensors"));  // the other run finished
  EXPECT_FALSE(fs::exists(d / "broken/MNIST.json"));

  // --per-gpu 2 (issue 23): two runs at a time on GPU 0, and the aggregate rate at the end:
  // 2 runs x 1 epoch x 48 training images over the wall time.
  auto [prc, pout] = run_cmd(script(d / "per") + flags + " --per-gpu 2");
  ASSERT_EQ(prc, 0) << pout;
  EXPECT_NE(pout.find("== cac-t0: on GPU 0 (CUDA_VISIBLE_DEVICES=0"), std::string::npos) << pout;
  EXPECT_NE(pout.find("== ce-t0: on GPU 0 (CUDA_VISIBLE_DEVICES=0"), std::string::npos) << pout;
  const size_t at = pout.find("benchmark: 2 runs trained in ");
  ASSERT_NE(at, std::string::npos) << pout;
  double wall = 0, rate = 0;
  ASSERT_EQ(std::sscanf(pout.c_str() + at, "benchmark: 2 runs trained in %lf s (wall; GPU slots: 0,0): %lf images/s",
                        &wall, &rate), 2) << pout.substr(at);
  EXPECT_NEAR(rate * wall, 96.0, 0.05 * rate + 0.5 * wall + 0.5) << pout.substr(at);  // both printed rounded
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {" --per-gpu 0", "--per-gpu '0' is not a number of runs"},
           {" --gpus 0,x", "GPU 'x'"}, {" --gpus 0 --device cpu", "drop --device cpu"},
           {" --gpus 0,2", "GPU 2 in --gpus: only 2 GPU(s) are visible (CUDA_VISIBLE_DEVICES=7,5)"}}) {
    auto [rc3, msg] = run_cmd("CUDA_VISIBLE_DEVICES=7,5 " + script(d / "bad") + args);
    EXPECT_EQ(rc3, 2) << args << ": " << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

TEST(Cli, EveryProgramTellsItsVersion) {
  const fs::path dir = fs::path(CAC_TRAIN_BIN).parent_path();
  const std::string expected = engine_version();
  EXPECT_EQ(expected.rfind("cac-engine ", 0), 0u) << expected;
  EXPECT_TRUE(expected.find("(git ") != std::string::npos || expected.find("(no git revision") != std::string::npos)
      << expected;
  const std::vector<std::string> programs = {CAC_TRAIN_BIN, CAC_EVAL_BIN, CAC_BENCH_BIN, (dir / "cac_predict").string()};
  for (const std::string& bin : programs) {
    auto [rc, out] = run_cmd(bin + " --version");
    EXPECT_EQ(rc, 0) << bin;
    EXPECT_EQ(out, expected + "\n") << bin;
  }
  Dir d;
  ASSERT_NO_FATAL_FAILURE(train_tiny_run(d));
  EXPECT_EQ(read_all(d / "run/train.log").rfind("engine: " + expected + "\n", 0), 0u);
  app::EvalOptions o = cpu_eval(d / "run");
  o.json_out = d / "eval.json";
  o.report_html = d / "report.html";
  ASSERT_EQ(app::run_eval(o), 0);
  EXPECT_EQ(nlohmann::json::parse(read_all(d / "eval.json"))["engine"], expected);
  EXPECT_NE(read_all(d / "report.html").find(eval::html_escape(expected)), std::string::npos);
}

// cac_bench's options are checked like cac_train's: a bad value names the option and what it allows.
TEST(Cli, BenchRejectsBadValues) {
  const std::string bench = CAC_BENCH_BIN;
  expect_command_fails(bench + " step --batch 0", "--batch");
  expect_command_fails(bench + " step --arch vgg16", "--arch");
  expect_command_fails(bench + " kernels --iters 0", "--iters");
  auto [rc4, out4] = run_cmd(bench + " step --graph --device cpu");  // a graph records CUDA work
  EXPECT_EQ(rc4, 2);
  EXPECT_NE(out4.find("--graph"), std::string::npos) << out4;
  EXPECT_NE(out4.find("--device cuda"), std::string::npos) << out4;
  expect_command_fails(bench + " epoch --dataset CIFAR100", "--dataset");
  expect_command_fails(bench + " epoch --scale 0", "--scale");
}

// cac_bench step's FLOP count: classifier32 at 32x32x3 with 6 classes has, per image, the
// multiply-adds 32*32*64*3*9 + 32*32*64*64*9 + 16*16*128*64*9 + 2*16*16*128*128*9 + 8*8*128*128*9
// + 2*8*8*128*128*9 + 4*4*128*128*9 + 2048*6 = 164,573,184, so 6 x that = 0.99 GFLOP per training
// image; ResNet-18's 0.555 G is the CIFAR network's usual count. On the CPU no peak is named.
TEST(Bench, StepCountsTheNetworksFlops) {
  const std::string bench = CAC_BENCH_BIN;
  auto [rc, out] = run_cmd(bench + " step --iters 1 --warmup 1 --batch 2");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("classifier32 training step: 0.99 GFLOP per image (6 x 0.165 G multiply-adds); eager "),
            std::string::npos) << out;
  EXPECT_EQ(out.find("peak"), std::string::npos) << out;
  auto [rc2, out2] = run_cmd(bench + " step --arch resnet18 --iters 1 --warmup 1 --batch 2 --precision bf16");
  ASSERT_EQ(rc2, 0) << out2;
  EXPECT_NE(out2.find("resnet18 training step: 3.33 GFLOP per image (6 x 0.555 G multiply-adds)"), std::string::npos)
      << out2;
}

// cac_bench epoch (issue 23): cac_train's loop on synthetic data of a benchmark's shape, and the
// projection. CIFAR+10 at 1/1000: 4 known classes x 5 images, a fifth held out -> 16 and 4; the
// protocol's 100 epochs (configs/datasets.json) x 10 runs. A smoke test: what it measures is not checked.
TEST(Bench, EpochRunsTheTrainingLoopAndProjects) {
  auto [rc, out] = run_cmd(std::string(CAC_BENCH_BIN) + " epoch --dataset CIFAR+10 --scale 0.001 --epochs 2 --device cpu "
                           "--workers 2");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("CIFAR+10      epoch 2: train"), std::string::npos) << out;
  EXPECT_NE(out.find("16 images)  validation"), std::string::npos) << out;
  EXPECT_NE(out.find("(4 images)"), std::string::npos) << out;
  const int epochs = [] {
    int n = 0;
    for (int e : data::dataset_defaults("CIFAR+10").cac_epochs) n += e;
    return n;
  }();
  EXPECT_NE(out.find(fmt::format("s per epoch x {} epochs = ", epochs)), std::string::npos) << out;
  EXPECT_NE(out.find("(from 0.001 of each training set, scaled up)"), std::string::npos) << out;
}

// --device takes auto, cpu or cuda in every program; PyTorch's "cuda:1" gets the way to pick a GPU
// here, and on a machine without a GPU, --device cuda says why (with no driver: that it is missing).
TEST(Cli, DeviceChoiceExplainsItself) {
  const fs::path dir = fs::path(CAC_TRAIN_BIN).parent_path();
  for (const std::string& bin : {std::string(CAC_TRAIN_BIN), std::string(CAC_EVAL_BIN) + " --run .",
                                 (dir / "cac_predict").string() + " --run . x.png", (dir / "cac_demo").string(),
                                 std::string(CAC_BENCH_BIN) + " step"}) {
    const std::string out = expect_command_fails(bin + " --device cuda:1", "CUDA_VISIBLE_DEVICES=1");
    EXPECT_NE(out.find("--device cuda"), std::string::npos) << out;
    expect_command_fails(bin + " --device gpu", "'gpu' is not one of");
  }
  EXPECT_EQ(app::device_problem("cuda"), "");
  EXPECT_EQ(app::device_problem("auto", {"cpu", "cuda"}), "'auto' is not one of cpu, cuda");
  std::string why;
  if (cuda::gpu_state(&why) == cuda::GpuState::Absent) {
    Dir d;
    expect_command_fails((dir / "cac_demo").string() + " --device cuda", "--device cuda: " + why);
    auto [rc, out] = run_cmd((dir / "cac_demo").string() + " --device auto --steps 1 --batch 4");
    EXPECT_EQ(rc, 0) << out;  // auto without a GPU: the CPU
    EXPECT_NE(out.find("on the CPU"), std::string::npos) << out;
  }
}

TEST(Cli, BadFlagsAndMissingDataFailClearly) {
  Dir d;
  const std::string bin = CAC_TRAIN_BIN;
  expect_command_fails(bin + " --dataset ImageNet --data-dir /tmp --out " + (d / "r"), "ImageNet");
  auto [rc2, out2] = run_cmd(bin + " --dataset MNIST --data-dir " + d.p.string() + " --out " + (d / "r"));
  EXPECT_NE(rc2, 0);
  EXPECT_NE(out2.find("train-images-idx3-ubyte"), std::string::npos) << out2;  // names the missing file
  expect_command_fails(bin + " --dataset MNIST --data-dir /tmp --out " + (d / "r") + " --epochs 3,x", "--epochs");
  expect_command_fails(bin + " --dataset MNIST --data-dir /tmp --out " + (d / "r") + " --trial 7", "trial");
  expect_command_fails(bin + " --dataset MNIST --data-dir /tmp --out " + (d / "r") + " --arch vgg16", "--arch");
  expect_command_fails(bin + " --dataset CIFAR10-FP --trial 3 --data-dir " + d.p.string() + " --out " + (d / "r"), "one fixed split");
  auto [rc5, out5] = run_cmd(bin + " --help");
  EXPECT_EQ(rc5, 0);
  EXPECT_NE(out5.find("--lambda"), std::string::npos);
  EXPECT_NE(out5.find("--resume"), std::string::npos);
  EXPECT_NE(out5.find("--arch"), std::string::npos);
  EXPECT_NE(out5.find("--config"), std::string::npos);
  EXPECT_NE(out5.find("--print-config"), std::string::npos);
}

// Issue 22, item 4: cac_eval writes deploy.json (and the other outputs) only once every run is
// evaluated: a run whose checkpoint holds a NaN fails naming the tensor, and the deploy.json of a
// run evaluated before it is left as it was (it used to be rewritten, and a NaN run's own one got
// null anchors and threshold).
TEST(Eval, NothingIsWrittenWhenARunFails) {
  Dir d;
  train_tiny_run(d);
  fs::copy(d / "run", d / "nan", fs::copy_options::recursive);
  Safetensors st = load_safetensors(d / "nan/best.safetensors");
  Tensor w = st.tensors.at("classify.weight").clone();
  w.data<float>()[0] = std::nanf("");
  st.tensors["classify.weight"] = w;
  save_safetensors(d / "nan/best.safetensors", NamedTensorList(st.tensors.begin(), st.tensors.end()), st.metadata);
  std::ofstream(d / "run/deploy.json") << "as before";
  std::ofstream(d / "nan/deploy.json") << "as before";
  app::EvalOptions o = cpu_eval(d / "run");
  o.runs.push_back(d / "nan");
  o.json_out = d / "eval.json";
  expect_error([&] { app::run_eval(o); }, "classify.weight holds NaN or Inf");
  EXPECT_EQ(read_all(d / "run/deploy.json"), "as before");
  EXPECT_EQ(read_all(d / "nan/deploy.json"), "as before");
  EXPECT_FALSE(fs::exists(d / "eval.json"));
}

// Issue 22, item 17: CSV fields quoted per RFC 4180 where they need it (a comma, a quote, a line
// break), so a path like `we,ird "q".png` stays one field; plain fields stay as they are.
TEST(Csv, FieldsAreQuotedPerRfc4180) {
  EXPECT_EQ(csv_field("plain/path.png"), "plain/path.png");
  EXPECT_EQ(csv_field("pred_dir/we,ird \"q\".png"), "\"pred_dir/we,ird \"\"q\"\".png\"");
  EXPECT_EQ(csv_field("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(csv_field(""), "");
}

// Numeric flags are checked whole, in words (issue 22, items 7, 9, 10, 11): no wrap-around of a
// huge --epochs or a negative or huge --seed, no infinite learning rate, and "alpha must be > 0"
// rather than CLI11's range with a 309-digit bound.
TEST(Cli, NumericFlagsAreCheckedWithoutWrapping) {
  Dir d;
  const std::string bin = std::string(CAC_TRAIN_BIN) + " --dataset MNIST --data-dir /tmp --print-config";
  const std::string e = expect_command_fails(bin + " --epochs 99999999999,1", "--epochs");
  EXPECT_NE(e.find("0-100000"), std::string::npos) << e;
  expect_command_fails(bin + " --lr inf,0.001", "--lr");
  expect_command_fails(bin + " --lr 0.01,nan", "--lr");
  for (const char* seed : {"-1", "99999999999999999999", "1e3"}) {
    const std::string s = expect_command_fails(bin + " --seed " + seed, "--seed");
    EXPECT_NE(s.find("0 to 18446744073709551615"), std::string::npos) << s;
  }
  const std::string a = expect_command_fails(bin + " --alpha 0", "--alpha");
  EXPECT_NE(a.find("alpha must be > 0"), std::string::npos) << a;
  EXPECT_EQ(a.find("17976931348623157"), std::string::npos) << a;
  auto [rc, out] = run_cmd(bin + " --seed 18446744073709551615 --epochs 2,1 --lr 0.1,0.01");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("18446744073709551615"), std::string::npos) << out;
}

}  // namespace
}  // namespace cac

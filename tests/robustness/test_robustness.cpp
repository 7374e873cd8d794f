// The programs tried as a careful user and a hostile input would try them (issue 22): killed at
// every rename, out of disk, two at once on one folder, signalled mid-pass, given bad flags, corrupt
// checkpoints and run files, hostile image folders. Each case runs the real cac_train, cac_eval and
// cac_predict on a tiny image folder the test writes, and checks the exit code, what they said and
// what is on disk afterwards. Kills come from the crash-injection hook (CAC_CRASH_AT, core/files.h),
// not from timing.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "apps/run_folder.h"
#include "tests/fake_datasets.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace cac {
namespace {

// The programs under test: this build's, or those in $CAC_PROBE_BIN_DIR (to probe another build,
// e.g. one from before a fix).
std::string program(const char* built, const char* name) {
  const char* dir = std::getenv("CAC_PROBE_BIN_DIR");
  return dir ? (fs::path(dir) / name).string() : std::string(built);
}
const std::string kTrain = program(CAC_TRAIN_BIN, "cac_train"), kEval = program(CAC_EVAL_BIN, "cac_eval"),
                  kPredict = program(CAC_PREDICT_BIN, "cac_predict");

struct Result {
  int rc;
  std::string out;  // stdout and stderr
  bool says(const std::string& s) const { return out.find(s) != std::string::npos; }
};
// A shell command's exit code (128 + N for death by signal N) and its output.
Result sh(const std::string& cmd) {
  FILE* p = popen(("(" + cmd + ") 2>&1").c_str(), "r");
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out};
}
std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
std::string q(const fs::path& p) { return "'" + p.string() + "'"; }
// The temporaries (NAME.tmp.PID.N) under `dir`, recursively.
std::vector<std::string> temps_under(const fs::path& dir) {
  std::vector<std::string> t;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) t.push_back(e.path().string());
  return t;
}
// metrics.csv without its timing column (seconds), which differs between any two runs.
std::string without_seconds(const std::string& csv) {
  std::string out, line;
  std::istringstream in(csv);
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ls(line);
    for (std::string x; std::getline(ls, x, ',');) f.push_back(x);
    if (f.size() > 10) f.erase(f.begin() + 10);
    for (size_t i = 0; i < f.size(); ++i) out += (i ? "," : "") + f[i];
    out += "\n";
  }
  return out;
}

// A scratch folder with a tiny image folder (3 classes: cat and dog known, bird unknown) and the
// commands that train, evaluate and predict on it.
struct Probe : ::testing::Test {
  testing::TempDir tmp{"cac-robust"};
  fs::path d = tmp.p;
  void SetUp() override {
    testing::write_image_folder(d / "pets", {"bird", "cat", "dog"}, 8, 4, 24, 24);
    std::ofstream(d / "split.json") << R"({"known": ["cat", "dog"], "unknown": ["bird"]})";
  }
  // Two epochs (one per stage) unless `extra` gives --epochs, --lr or --seed.
  std::string train(const fs::path& run, const std::string& extra = "") const {
    return kTrain + " --dataset ImageFolder --data-dir " + q(d / "pets") + " --split " + q(d / "split.json") +
           " --image-size 32 --batch 4 --device cpu --workers 1 --out " + q(run) + " " + extra +
           (extra.find("--seed") == std::string::npos ? " --seed 3" : "") +
           (extra.find("--epochs") == std::string::npos ? " --epochs 1,1" : "") +
           (extra.find("--lr") == std::string::npos ? " --lr 0.01,0.001" : "");
  }
  std::string resume(const fs::path& run) const { return kTrain + " --resume " + q(run) + " --workers 1"; }
  std::string eval(const fs::path& run, const std::string& extra = "") const {
    return kEval + " --run " + q(run) + " --device cpu --workers 1 " + extra;
  }
  std::string predict(const fs::path& run, const std::string& what) const {
    return kPredict + " --run " + q(run) + " --device cpu " + what;
  }
  // A trained and evaluated run (made once per test that asks).
  fs::path finished_run(const std::string& name = "run") {
    const fs::path run = d / name;
    const Result t = sh(train(run));
    EXPECT_EQ(t.rc, 0) << t.out;
    const Result e = sh(eval(run));
    EXPECT_EQ(e.rc, 0) << e.out;
    return run;
  }
};

// ---- Data loss and silent corruption ----------------------------------------------------------

// Item 1: a new run into a finished run's folder is refused and the run is untouched; --overwrite
// replaces it (its deploy.json goes too, so no stale threshold meets the new weights); a folder
// left by a run stopped in its first epoch is simply started over.
TEST_F(Probe, NewRunRefusesAFolderHoldingARun) {
  const fs::path run = finished_run();
  const std::string metrics = read_all(run / "metrics.csv"), best = read_all(run / "best.safetensors");
  const Result again = sh(train(run, "--seed 4"));
  EXPECT_EQ(again.rc, 1) << again.out;
  EXPECT_TRUE(again.says("already holds a run (best.safetensors, config.json, deploy.json, last.safetensors, metrics.csv, train.log)")) << again.out;
  EXPECT_TRUE(again.says("--resume " + run.string())) << again.out;
  EXPECT_EQ(read_all(run / "metrics.csv"), metrics);
  EXPECT_TRUE(read_all(run / "best.safetensors") == best);
  EXPECT_TRUE(fs::exists(run / "deploy.json"));
  std::ofstream(run / "notes.txt") << "mine";
  const Result over = sh(train(run, "--seed 4 --overwrite"));
  ASSERT_EQ(over.rc, 0) << over.out;
  EXPECT_TRUE(over.says("--overwrite: deleted the old run's files")) << over.out;
  EXPECT_TRUE(over.says("; kept: notes.txt (not written by cac_train or cac_eval)")) << over.out;
  EXPECT_FALSE(fs::exists(run / "deploy.json"));
  EXPECT_FALSE(read_all(run / "best.safetensors") == best);
  EXPECT_NE(read_all(run / "config.json").find("\"seed\": 4"), std::string::npos);
  // A folder holding only what a first-epoch stop leaves: started over. Someone else's files: refused.
  fs::create_directories(d / "stub");
  std::ofstream(d / "stub/config.json") << "{}";
  std::ofstream(d / "stub/train.log") << "interrupted in the first epoch\n";
  const Result stub = sh(train(d / "stub"));
  EXPECT_EQ(stub.rc, 0) << stub.out;
  EXPECT_TRUE(stub.says("stopped in its first epoch (no checkpoint to resume); starting it over")) << stub.out;
  fs::create_directories(d / "photos");
  std::ofstream(d / "photos/holiday.jpg") << "x";
  const Result foreign = sh(train(d / "photos", "--overwrite"));
  EXPECT_EQ(foreign.rc, 1);
  EXPECT_TRUE(foreign.says("is not empty (holiday.jpg) and holds no run")) << foreign.out;
}

// Item 2: while one process uses a run folder, a second cac_train (new or --resume) or cac_eval on
// it is refused naming the holder's PID, and nothing of the folder changes.
TEST_F(Probe, ASecondProcessOnARunFolderIsRefusedNamingTheHolder) {
  const fs::path run = finished_run();
  const std::string config = read_all(run / "config.json"), deploy = read_all(run / "deploy.json");
  {
    app::RunFolderLock held(run.string(), "robustness-test");
    const std::string holder = "in use by robustness-test (PID " + std::to_string(::getpid()) + ")";
    for (const std::string& cmd : {train(run, "--overwrite"), resume(run), eval(run)}) {
      const Result r = sh(cmd);
      EXPECT_EQ(r.rc, 1) << cmd << "\n" << r.out;
      EXPECT_TRUE(r.says(holder)) << cmd << "\n" << r.out;
    }
    EXPECT_EQ(read_all(run / "config.json"), config);
    EXPECT_EQ(read_all(run / "deploy.json"), deploy);
  }
  // Two real cac_train processes started together on one new folder: exactly one trains it.
  const fs::path both = d / "both";
  const Result r = sh(train(both) + " > " + q(d / "a.txt") + " 2>&1 & " + train(both, "--seed 9") + " > " +
                      q(d / "b.txt") + " 2>&1 & wait %1; echo a=$?; wait %2; echo b=$?");
  const bool a_ok = r.says("a=0"), b_ok = r.says("b=0");
  EXPECT_NE(a_ok, b_ok) << r.out << read_all(d / "a.txt") << read_all(d / "b.txt");
  EXPECT_NE(read_all(a_ok ? d / "b.txt" : d / "a.txt").find("in use by cac_train (PID"), std::string::npos)
      << read_all(d / "a.txt") << read_all(d / "b.txt");
  EXPECT_EQ(read_all(both / "config.json").find("\"seed\": 9") != std::string::npos, b_ok);
}

// Kill -9 at each rename of a run (config.json, then per epoch metrics.csv, best and last
// checkpoints), then the command a script would run next (--resume where a checkpoint exists, else
// the same command): the finished run is bit-identical to one never killed, and no temporary is left.
TEST_F(Probe, KilledAtEveryRenameThenResumedGivesTheSameRun) {
  const fs::path ref = d / "ref";
  ASSERT_EQ(sh(train(ref)).rc, 0);
  for (int n = 1; n <= 7; ++n) {
    const fs::path run = d / ("kill" + std::to_string(n));
    const Result killed = sh("CAC_CRASH_AT=rename:" + std::to_string(n) + " " + train(run));
    EXPECT_EQ(killed.rc, 137) << "rename " << n << ": " << killed.out;
    const Result again = sh(fs::exists(run / "last.safetensors") ? resume(run) : train(run));
    ASSERT_EQ(again.rc, 0) << "rename " << n << ": " << again.out;
    EXPECT_TRUE(read_all(run / "best.safetensors") == read_all(ref / "best.safetensors")) << "rename " << n;
    EXPECT_TRUE(read_all(run / "last.safetensors") == read_all(ref / "last.safetensors")) << "rename " << n;
    EXPECT_EQ(without_seconds(read_all(run / "metrics.csv")), without_seconds(read_all(ref / "metrics.csv")));
    EXPECT_EQ(temps_under(run), std::vector<std::string>()) << "rename " << n;
  }
}

// Item 18: killed halfway through writing a file, a process leaves its temporary; the next process
// on the folder removes it (the file itself was never torn), as it removes any of a dead process.
TEST_F(Probe, TemporariesOfKilledProcessesAreRemoved) {
  const fs::path run = d / "run";
  const Result killed = sh("CAC_CRASH_AT=write:3 " + train(run));  // config.json, metrics.csv, then best
  EXPECT_EQ(killed.rc, 137) << killed.out;
  ASSERT_EQ(temps_under(run).size(), 1u);
  EXPECT_FALSE(fs::exists(run / "best.safetensors"));  // never half a checkpoint under the real name
  const Result again = sh(train(run));  // no checkpoint yet: the same command again
  ASSERT_EQ(again.rc, 0) << again.out;
  EXPECT_EQ(temps_under(run), std::vector<std::string>());
  // cac_eval killed while writing deploy.json; and a stale temporary of a long-gone process.
  const Result ek = sh("CAC_CRASH_AT=write:1 " + eval(run));
  EXPECT_EQ(ek.rc, 137) << ek.out;
  EXPECT_EQ(temps_under(run).size(), 1u);
  const Result gone = sh("sh -c 'echo $$'");
  std::ofstream(run / ("metrics.csv.tmp." + std::to_string(std::stoi(gone.out)) + ".0")) << "stale";
  const Result e = sh(eval(run, "--json " + q(d / "eval.json")));
  ASSERT_EQ(e.rc, 0) << e.out;
  EXPECT_EQ(temps_under(run), std::vector<std::string>());
}

// Disk full (a file-size limit): the write fails with a message saying so, the last checkpoint
// stays as it was, and no temporary is left.
TEST_F(Probe, DiskFullSaysSoAndKeepsTheLastCheckpoint) {
  const fs::path run = d / "run";
  ASSERT_EQ(sh(train(run, "--stop-after 1")).rc, 0);
  const std::string last = read_all(run / "last.safetensors");
  const Result full = sh("trap '' XFSZ; ulimit -f 64; exec " + resume(run));
  EXPECT_EQ(full.rc, 1) << full.out;
  EXPECT_TRUE(full.says("write failed (disk full?)")) << full.out;
  EXPECT_TRUE(read_all(run / "last.safetensors") == last);
  EXPECT_EQ(temps_under(run), std::vector<std::string>());
  EXPECT_EQ(sh(resume(run)).rc, 0);  // space again: the run goes on
}

// An output folder that cannot be made: a clear error naming it, no crash.
TEST_F(Probe, AnUnwritableOutputFolderIsNamed) {
  const Result r = sh(train("/dev/null/run"));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_TRUE(r.says("/dev/null/run: cannot create the run folder")) << r.out;
}

// ---- Signals ---------------------------------------------------------------------------------

// Item 8: SIGTERM during a long validation pass (1,200 images at batch 1 after a training epoch of
// 8 batches) or cac_eval's passes (1,200 validation and 10,000 test images, at 256 a batch) end
// the process at the next batch, with the signal's exit code; the cut-short validation does not
// count (no validation line, no checkpoint) and cac_eval writes nothing.
TEST_F(Probe, AStopSignalEndsValidationAndEvaluationPassesAtTheNextBatch) {
  testing::write_mnist_idx((d / "mnist").string(), 1000);
  const fs::path run = d / "run", log = d / "console.txt";
  auto stopped_within = [&](const std::string& cmd, const std::string& started) {
    std::ofstream(d / "stop.sh") << cmd << " > " << q(log) << " 2>&1 &\npid=$!\n"
                                 << "for i in $(seq 1200); do grep -q '" << started << "' " << q(log)
                                 << " 2>/dev/null && break; sleep 0.05; done\nsleep 0.3\n"
                                 << "t0=$(date +%s%N); kill -TERM $pid; wait $pid; rc=$?; t1=$(date +%s%N)\n"
                                 << "echo rc=$rc ms=$(( (t1 - t0) / 1000000 ))\n";
    const Result r = sh("bash " + q(d / "stop.sh"));
    const size_t at = r.out.find("ms=");
    EXPECT_NE(at, std::string::npos) << r.out;
    EXPECT_TRUE(r.says("rc=143")) << r.out << read_all(log);
    return at == std::string::npos ? -1 : std::stoi(r.out.substr(at + 3));
  };
  const std::string mnist = kTrain + " --dataset MNIST --data-dir " + q(d / "mnist") + " --train-limit 8 "
                            "--device cpu --workers 1 --lr 0.01 ";
  ASSERT_EQ(sh(mnist + "--batch 4 --epochs 1 --out " + q(run)).rc, 0);  // evaluated below
  const std::string last = read_all(run / "last.safetensors");
  const int ms = stopped_within(mnist + "--epochs 2 --batch 1 --out " + q(d / "run2"), "epoch   1/2 \\[.*eta");
  EXPECT_LT(ms, 10000) << read_all(log);  // a batch of 1, even on a loaded machine under the sanitizers
  EXPECT_TRUE(read_all(log).find("validation:") == std::string::npos) << read_all(log);  // cut short: no line
  EXPECT_TRUE(read_all(log).find("terminated (SIGTERM) in the first epoch") != std::string::npos) << read_all(log);
  EXPECT_FALSE(fs::exists(d / "run2/last.safetensors"));
  const int ems = stopped_within(eval(run), "cac_eval: ");
  EXPECT_LT(ems, 10000) << read_all(log);  // a batch of 256 and the loader's wind-down, of about 45
  EXPECT_TRUE(read_all(log).find("terminated (SIGTERM); nothing was written") != std::string::npos) << read_all(log);
  EXPECT_FALSE(fs::exists(run / "deploy.json"));
  EXPECT_TRUE(read_all(run / "last.safetensors") == last);
  EXPECT_EQ(temps_under(d), std::vector<std::string>());
}

// ---- Bad values --------------------------------------------------------------------------------

// Items 7, 9, 10, 11: numeric flags out of range, non-finite or too wide are refused in words.
TEST_F(Probe, BadFlagValuesAreRefusedInWords) {
  const struct {
    std::string flags, says;
  } cases[] = {
      {"--epochs 99999999999,1", "0-100000"},
      {"--epochs -1,1", "0-100000"},
      {"--seed -1", "not a whole number from 0 to 18446744073709551615"},
      {"--seed 99999999999999999999", "not a whole number from 0 to 18446744073709551615"},
      {"--alpha 0", "alpha must be > 0"},
      {"--alpha nan", "alpha must be > 0"},
      {"--lr inf,0.001", "positive finite"},
      {"--lr nan,0.001", "positive finite"},
      {"--lambda -1", "lambda must be >= 0"},
      {"--batch 0", "--batch"},
      {"--trial 7", "--trial"},
      {"--image-size 4", "--image-size"},
      {"--workers -2", "--workers"},
      {"--device tpu", "--device"},
      {"--graph sometimes", "--graph"},
      {"--precision fp16", "--precision"},
      {"--data-on-device maybe", "--data-on-device"},
  };
  for (const auto& c : cases) {
    const Result r = sh(train(d / "run", c.flags));
    EXPECT_NE(r.rc, 0) << c.flags;
    EXPECT_TRUE(r.says(c.says)) << c.flags << "\n" << r.out;
    EXPECT_LT(r.out.size(), 2000u) << c.flags;  // a sentence, not a 309-digit number
  }
  EXPECT_FALSE(fs::exists(d / "run/config.json"));
  const Result t = sh(kPredict + " --run " + q(d) + " --threshold -1 x.png");
  EXPECT_NE(t.rc, 0);
}

// Item 12 (and the JSON every program reads): 100,000 levels of nesting are refused briefly, no crash.
TEST_F(Probe, DeeplyNestedJsonIsRefusedBriefly) {
  std::ofstream(d / "deep.json") << "{\"known\": " << std::string(100000, '[') << std::string(100000, ']') << "}";
  const Result r = sh(kTrain + " --dataset ImageFolder --data-dir " + q(d / "pets") + " --split " + q(d / "deep.json") +
                      " --device cpu --out " + q(d / "run"));
  EXPECT_EQ(r.rc, 1) << r.out.substr(0, 400);
  EXPECT_TRUE(r.says("deep.json")) << r.out.substr(0, 400);
  EXPECT_LT(r.out.size(), 1000u);
}

// ---- Checkpoints and run files -----------------------------------------------------------------

// Items 3, 4, 5: a checkpoint with overlapping ranges, a NaN, or bookkeeping beyond the schedule is
// refused naming the file, and deploy.json stays as it was; truncated and garbage files likewise.
TEST_F(Probe, CorruptCheckpointsAreRefusedAndDeployJsonKept) {
  const fs::path run = finished_run();
  const std::string deploy = read_all(run / "deploy.json"), best = read_all(run / "best.safetensors");
  const uint64_t n = [&] { uint64_t v = 0; for (int i = 7; i >= 0; --i) v = v << 8 | uint8_t(best[size_t(i)]); return v; }();
  json head = json::parse(best.substr(8, n));
  auto with_header = [&](const json& h) {
    std::string text = h.dump();
    text.resize(n, ' ');  // same length: the data section where it was
    return best.substr(0, 8) + text + best.substr(8 + n);
  };
  json overlap = head;
  for (auto& [name, t] : overlap.items())
    if (name != "__metadata__" && t["data_offsets"][0].get<uint64_t>() > 0) {
      t["data_offsets"][0] = t["data_offsets"][0].get<uint64_t>() - 4;
      t["data_offsets"][1] = t["data_offsets"][1].get<uint64_t>() - 4;
      break;
    }
  std::string nan = best;
  const uint64_t anchor_at = 8 + n + head["anchors"]["data_offsets"][0].get<uint64_t>();
  const float qnan = std::numeric_limits<float>::quiet_NaN();
  nan.replace(anchor_at, 4, reinterpret_cast<const char*>(&qnan), 4);
  const struct {
    std::string what, bytes, says;
  } cases[] = {
      {"overlapping ranges", with_header(overlap), "best.safetensors"},
      {"a NaN", nan, "NaN"},
      {"truncated", best.substr(0, best.size() / 2), "best.safetensors"},
      {"garbage", std::string(4096, '\x7f'), "best.safetensors"},
      {"empty", "", "best.safetensors"},
  };
  for (const auto& c : cases) {
    std::ofstream(run / "best.safetensors", std::ios::binary | std::ios::trunc) << c.bytes;
    const Result r = sh(eval(run));
    EXPECT_EQ(r.rc, 1) << c.what << "\n" << r.out;
    EXPECT_TRUE(r.says(c.says)) << c.what << "\n" << r.out;
    EXPECT_EQ(read_all(run / "deploy.json"), deploy) << c.what;
  }
  // Bookkeeping beyond config.json's two epochs.
  std::string last = read_all(run / "last.safetensors");
  const size_t at = last.find("\"epochs_done\":\"2\"");
  ASSERT_NE(at, std::string::npos);
  last.replace(at, 17, "\"epochs_done\":\"9\"");
  std::ofstream(run / "last.safetensors", std::ios::binary | std::ios::trunc) << last;
  const Result r = sh(resume(run));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_TRUE(r.says("epochs_done 9 is more than the 2 epochs")) << r.out;
}

// Item 6: divergence stops the run at the first non-finite validation loss, and no checkpoint with
// a non-finite value is ever written.
TEST_F(Probe, DivergenceStopsWithoutANonFiniteCheckpoint) {
  const Result r = sh(train(d / "run", "--lr 1e30,0.001 --epochs 2,1"));
  EXPECT_EQ(r.rc, 3) << r.out;
  EXPECT_TRUE(r.says("try a lower --lr")) << r.out;
  for (const char* f : {"best.safetensors", "last.safetensors"})
    if (fs::exists(d / "run" / f)) {
      const Result e = sh(eval(d / "run"));
      EXPECT_FALSE(e.says("NaN")) << e.out;
    }
}

// Item 14 and the run files that held: every broken deploy.json and config.json field gets a clear
// error naming the file, never a crash or a silently wrong prediction.
TEST_F(Probe, BrokenRunFilesGetClearErrors) {
  const fs::path run = finished_run();
  const json deploy = json::parse(read_all(run / "deploy.json"));
  const json config = json::parse(read_all(run / "config.json"));
  testing::write_png((d / "new/a.png").string(), 24, 24, 100);
  const struct {
    const char* field;
    json value;
  } deploy_cases[] = {
      {"threshold", -1},      {"threshold", "x"},        {"threshold", nullptr}, {"anchors", json::array({1, 2})},
      {"anchors", nullptr},   {"num_classes", 0},        {"num_classes", 99},    {"method", "svm"},
      {"arch", "vgg"},        {"image_size", 0},         {"image_size", 1 << 20}, {"channels", 2},
      {"mean", json::array()}, {"std", json::array({0, 0, 0})}, {"class_names", json::array({"a"})},
      {"accept", 0},          {"accept", 2},             {"std", "wide"},
  };
  for (const auto& c : deploy_cases) {
    json j = deploy;
    j[c.field] = c.value;
    std::ofstream(run / "deploy.json", std::ios::trunc) << j.dump();
    const Result r = sh(predict(run, q(d / "new")));
    EXPECT_EQ(r.rc, 1) << c.field << "=" << c.value.dump() << "\n" << r.out;
    EXPECT_TRUE(r.says("deploy.json")) << c.field << "=" << c.value.dump() << "\n" << r.out;
  }
  std::ofstream(run / "deploy.json", std::ios::trunc) << deploy.dump();
  const struct {
    const char* field;
    json value;
  } config_cases[] = {
      {"dataset", "ImageNet"}, {"trial", 9},          {"alpha", 0},        {"alpha", "ten"},      {"lambda", -1},
      {"epochs", json::array({1})}, {"lrs", json::array({0.1, -1})}, {"batch", 0}, {"dropout", 1.5},
      {"momentum", -0.1},      {"image_size", 7},     {"channels", 4},     {"flip_p", 2},         {"rotate_deg", 500},
      {"crop_scale_min", 0},   {"workers", -1},       {"method", "svm"},
  };
  for (const auto& c : config_cases) {
    json j = config;
    j[c.field] = c.value;
    std::ofstream(run / "config.json", std::ios::trunc) << j.dump();
    const Result r = sh(eval(run));
    EXPECT_EQ(r.rc, 1) << c.field << "=" << c.value.dump() << "\n" << r.out;
    EXPECT_TRUE(r.says("config.json")) << c.field << "=" << c.value.dump() << "\n" << r.out;
  }
}

// ---- Hostile image folders and cac_predict ---------------------------------------------------------

// Item 13: a split without unknown classes trains; cac_eval then says to give --unknown, and
// evaluates against the sets given.
TEST_F(Probe, ASplitWithoutUnknownsIsEvaluatedAgainstTheUnknownsGiven) {
  std::ofstream(d / "none.json") << R"({"known": ["cat", "dog"], "unknown": []})";
  const fs::path run = d / "run";
  const Result t = sh(kTrain + " --dataset ImageFolder --data-dir " + q(d / "pets") + " --split " + q(d / "none.json") +
                      " --image-size 32 --epochs 1 --lr 0.01 --batch 4 --device cpu --workers 1 --out " + q(run));
  ASSERT_EQ(t.rc, 0) << t.out;
  const Result bare = sh(eval(run));
  EXPECT_EQ(bare.rc, 1) << bare.out;
  EXPECT_TRUE(bare.says("names no unknown classes")) << bare.out;
  EXPECT_TRUE(bare.says("--unknown NAME=FOLDER")) << bare.out;
  const Result with = sh(eval(run, "--unknown birds=" + q(d / "pets/test/bird") + " --json " + q(d / "e.json")));
  ASSERT_EQ(with.rc, 0) << with.out;
  const json j = json::parse(read_all(d / "e.json"));
  ASSERT_EQ(j["runs"].size(), 1u);
  EXPECT_EQ(j["runs"][0]["unknown_set"], "birds");
  EXPECT_TRUE(j["runs"][0]["auroc"].is_number());
}

// Items 15, 16, 17: cac_predict over a folder with a link loop, a dangling link, unreadable images
// and a path that needs quoting: every readable image predicted, each bad one named with its
// reason (stderr and an error row), exit code 2; the CSV is RFC 4180.
TEST_F(Probe, PredictGoesOnPastBadImagesAndLinkLoops) {
  const fs::path run = finished_run();
  const fs::path in = d / "in";
  fs::create_directories(in / "sub");
  testing::write_png((in / "good.png").string(), 24, 24, 90);
  testing::write_png((in / "we,ird \"q\".png").string(), 24, 24, 120);
  testing::write_jpeg((in / "sub/c.jpg").string(), 30, 20, false, 60);
  std::ofstream(in / "junk.jpg") << "not a jpeg";
  std::ofstream(in / "empty.png");
  fs::create_symlink("loop.png", in / "loop.png");   // a link to itself
  fs::create_symlink("nowhere.jpg", in / "dangling.jpg");
  fs::create_directory_symlink("..", in / "sub/up");  // a cycle through a folder link
  const Result r = sh(predict(run, q(in) + " --csv " + q(d / "p.csv")));
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_TRUE(r.says("junk.jpg: neither a JPEG nor a PNG")) << r.out;
  EXPECT_TRUE(r.says("empty.png")) << r.out;
  EXPECT_TRUE(r.says("3 images:")) << r.out;
  EXPECT_TRUE(r.says("2 of 5 images could not be read")) << r.out;
  const std::string csv = read_all(d / "p.csv");
  EXPECT_NE(csv.find("\"" + (in / "we,ird \"\"q\"\".png").string() + "\","), std::string::npos) << csv;
  EXPECT_NE(csv.find((in / "junk.jpg").string() + ",,,,error,"), std::string::npos) << csv;
  int rows = 0;
  for (char ch : csv) rows += ch == '\n';
  EXPECT_EQ(rows, 6) << csv;  // the header and 5 images
}

// Item 16 for training: an unreadable image in an image folder stops cac_train naming it, or with
// --skip-bad-images is left out and counted; hostile entries that held (a link loop, an empty
// class folder, files that are not images) are passed over or named.
TEST_F(Probe, AnUnreadableTrainingImageStopsOrIsSkipped) {
  std::ofstream(d / "pets/train/cat/bad.jpg") << "not a jpeg";
  std::ofstream(d / "pets/train/dog/notes.txt") << "ignored: not an image name";
  fs::create_symlink("loop", d / "pets/train/loop");
  const Result stop = sh(train(d / "a"));
  EXPECT_EQ(stop.rc, 1) << stop.out;
  EXPECT_TRUE(stop.says("bad.jpg: neither a JPEG nor a PNG")) << stop.out;
  const Result skip = sh(train(d / "b", "--skip-bad-images"));
  ASSERT_EQ(skip.rc, 0) << skip.out;
  EXPECT_TRUE(skip.says("train: skipped 1 of 25 images that could not be read")) << skip.out;
  EXPECT_NE(read_all(d / "b/config.json").find("\"skip_bad_images\": true"), std::string::npos);
  fs::create_directories(d / "pets/train/fish");
  fs::create_directories(d / "pets/test/fish");
  const Result empty = sh(train(d / "c"));
  EXPECT_EQ(empty.rc, 1) << empty.out;
  EXPECT_TRUE(empty.says("fish: no JPEG or PNG images")) << empty.out;
}

}  // namespace
}  // namespace cac

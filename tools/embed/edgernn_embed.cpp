// edgernn_embed: stream frames through an edgernn .onnx file with the onnxruntime C++ API.
//
//   printf '5\n11\n16\n' | edgernn_embed runs/sunspots.onnx
//   {"t": 0, "y": [21.6766872]}
//   ...
//
// The example a device application starts from: the model file carries its own description
// (JSON under the metadata key "edgernn": the frame input, the output, the state pairs and their
// shapes), so the program needs no model-specific code. One session call per frame; the state
// outputs of step t are fed back as the state inputs of step t+1, starting from zeros.
//
// Input: one frame per line on stdin, F numbers separated by commas, spaces, tabs or ';'
// (one token id per line for a token model); blank lines and lines starting with '#' are skipped.
// Output: one line per frame, flushed, in the format of `edgernn stream --format jsonl|csv`.
// Exit status: 0 success; 2 bad usage, bad model or bad input (one line on stderr).

#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "json_min.hpp"

namespace {

const char* const kMetaKey = "edgernn";

struct Error : std::runtime_error {  // bad usage, model or input: exit status 2
  using std::runtime_error::runtime_error;
};

struct StatePair {
  std::string input, output;
  std::vector<int64_t> shape;  // with 1 at the batch axis: one stream
};

struct Meta {
  std::string x, y;
  bool tokens = false;   // int64 token ids [batch, time] instead of float frames [batch, time, F]
  int64_t features = 1;  // values per frame (1 for tokens)
  int64_t vocab = 0;     // token models: ids are 0 .. vocab-1
  bool bidirectional = false;
  bool classify = false;
  std::vector<std::string> labels;
  std::vector<StatePair> states;
};

const json_min::Value& need(const json_min::Value& obj, const char* key, json_min::Value::Kind kind,
                            const std::string& source) {
  const json_min::Value* v = obj.get(key);
  if (!v || v->kind != kind)
    throw Error(source + ": the '" + kMetaKey + "' metadata lacks a valid '" + key +
                "'; re-export the model with `edgernn export`");
  return *v;
}

Meta read_meta(const std::string& text, const std::string& source) {
  using K = json_min::Value;
  json_min::Value root;
  try {
    root = json_min::parse(text);
  } catch (const std::runtime_error& e) {
    throw Error(source + ": the '" + kMetaKey + "' metadata is not valid JSON (" + e.what() + ")");
  }
  if (root.kind != K::Object) throw Error(source + ": the '" + kMetaKey + "' metadata is not a JSON object");
  if (need(root, "format", K::Number, source).number > 1)
    throw Error(source + ": metadata format " + std::to_string(int(root.get("format")->number)) +
                " is newer than this program reads (1): rebuild it from a newer edgernn");
  Meta m;
  const auto& in = need(root, "input", K::Object, source);
  const auto& out = need(root, "output", K::Object, source);
  m.x = need(in, "name", K::String, source).string;
  m.y = need(out, "name", K::String, source).string;
  m.tokens = need(in, "dtype", K::String, source).string == "int64";
  if (!m.tokens) m.features = static_cast<int64_t>(need(in, "features", K::Number, source).number);
  if (const auto* v = in.get("vocab"); v && v->kind == K::Number) m.vocab = static_cast<int64_t>(v->number);
  if (const auto* labels = out.get("labels"); labels && labels->kind == K::Array)
    for (const auto& l : labels->array) m.labels.push_back(l.string);
  const auto& model = need(root, "model", K::Object, source);
  if (const auto* b = model.get("bidirectional"); b && b->kind == K::Bool) m.bidirectional = b->boolean;
  if (const auto* t = model.get("task"); t && t->kind == K::String) m.classify = t->string == "classify";
  for (const auto& s : need(root, "states", K::Array, source).array) {
    StatePair p{need(s, "input", K::String, source).string, need(s, "output", K::String, source).string, {}};
    const auto* axis = s.get("batch_axis");
    size_t batch_axis = axis && axis->kind == K::Number ? static_cast<size_t>(axis->number) : 0;
    const auto& shape = need(s, "shape", K::Array, source).array;
    for (size_t i = 0; i < shape.size(); ++i) {
      if (i == batch_axis) p.shape.push_back(1);
      else if (shape[i].kind == K::Number) p.shape.push_back(static_cast<int64_t>(shape[i].number));
      else throw Error(source + ": state '" + p.input + "' has a symbolic dim other than batch; expected fixed sizes");
    }
    m.states.push_back(std::move(p));
  }
  return m;
}

// Split a line on commas, whitespace and ';' (as `edgernn stream` does) and read each field.
std::vector<double> parse_line(const std::string& line, size_t lineno, int64_t width) {
  std::vector<double> values;
  const char* seps = ", \t\r\n;";
  size_t i = line.find_first_not_of(seps);
  while (i != std::string::npos) {
    size_t j = line.find_first_of(seps, i);
    std::string field = line.substr(i, j == std::string::npos ? std::string::npos : j - i);
    char* end = nullptr;
    double v = std::strtod(field.c_str(), &end);
    if (end == field.c_str() || *end != '\0')
      throw Error("<stdin>:" + std::to_string(lineno) + ": '" + field.substr(0, 40) + "' is not a number; expected " +
                  std::to_string(width) + " numbers per row");
    values.push_back(v);
    i = j == std::string::npos ? j : line.find_first_not_of(seps, j);
  }
  if (static_cast<int64_t>(values.size()) != width)
    throw Error("<stdin>:" + std::to_string(lineno) + ": " + std::to_string(values.size()) + " values; expected " +
                std::to_string(width) + " (one per model feature)");
  return values;
}

std::string num(double v) {  // %.9g round-trips a float32, as edgernn's writers do
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (static_cast<unsigned char>(c) < 0x20) { char b[8]; std::snprintf(b, sizeof b, "\\u%04x", c); out += b; }
    else out += c;
  }
  return out + "\"";
}

class Writer {
 public:
  Writer(std::string format, const Meta& m) : format_(std::move(format)), meta_(m) {}

  void write(long t, const float* y, size_t n) {
    std::string label, p;
    if (meta_.classify) top(y, n, label, p);
    std::string line;
    if (format_ == "jsonl") {
      line = "{\"t\": " + std::to_string(t) + ", \"y\": [";
      for (size_t i = 0; i < n; ++i) line += (i ? ", " : "") + num(y[i]);
      line += "]";
      if (meta_.classify) line += ", \"label\": " + json_string(label) + ", \"p\": " + p;
      line += "}";
    } else {  // csv
      if (!header_done_) {
        std::string head = "t";
        for (size_t i = 0; i < n; ++i) head += ",y" + std::to_string(i);
        std::cout << head << (meta_.classify ? ",label,p" : "") << "\n";
        header_done_ = true;
      }
      line = std::to_string(t);
      for (size_t i = 0; i < n; ++i) line += "," + num(y[i]);
      if (meta_.classify) line += "," + label + "," + p;
    }
    std::cout << line << std::endl;  // flushed: a pipe sees every step live
  }

 private:
  std::string format_;
  const Meta& meta_;
  bool header_done_ = false;

  void top(const float* y, size_t n, std::string& label, std::string& p) const {
    size_t k = static_cast<size_t>(std::max_element(y, y + n) - y);
    float sum = 0.f;
    for (size_t i = 0; i < n; ++i) sum += std::exp(y[i] - y[k]);
    label = k < meta_.labels.size() ? meta_.labels[k] : std::to_string(k);
    p = num(1.0f / sum);
  }
};

struct Options {
  std::string model, format = "jsonl";
  int threads = 1;
};

const char* const kUsage =
    "usage: edgernn_embed MODEL.onnx [--threads N] [--format jsonl|csv]\n"
    "Streams frames from stdin (one per line) through MODEL, carrying its state; one line out per frame.\n";

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") { std::cout << kUsage; std::exit(0); }
    if ((a == "--threads" || a == "--format") && i + 1 >= argc) throw Error(a + " needs a value\n" + kUsage);
    if (a == "--threads") o.threads = std::atoi(argv[++i]);
    else if (a == "--format") o.format = argv[++i];
    else if (!a.empty() && a[0] == '-') throw Error("unknown option " + a + "\n" + kUsage);
    else if (o.model.empty()) o.model = a;
    else throw Error("one model only; got " + o.model + " and " + a + "\n" + kUsage);
  }
  if (o.model.empty()) throw Error(std::string("no model given\n") + kUsage);
  if (o.threads < 1) throw Error("--threads must be a positive integer");
  if (o.format != "jsonl" && o.format != "csv") throw Error("--format " + o.format + "; expected jsonl or csv");
  return o;
}

void check_graph(Ort::Session& session, const Meta& m, const std::string& source) {
  Ort::AllocatorWithDefaultOptions alloc;
  std::vector<std::string> want{m.x};
  for (const auto& s : m.states) want.push_back(s.input);
  std::vector<std::string> got;
  for (size_t i = 0; i < session.GetInputCount(); ++i) got.push_back(session.GetInputNameAllocated(i, alloc).get());
  std::sort(want.begin(), want.end());
  std::sort(got.begin(), got.end());
  if (want != got) {
    std::string g, w;
    for (const auto& s : got) g += (g.empty() ? "" : ", ") + s;
    for (const auto& s : want) w += (w.empty() ? "" : ", ") + s;
    throw Error(source + ": the graph takes [" + g + "] but its metadata describes [" + w + "]; re-export it");
  }
}

int run(const Options& o) {
  if (!std::ifstream(o.model).good())
    throw Error(o.model + ": no such model file; expected an .onnx file written by `edgernn export`");
  Ort::Env env(ORT_LOGGING_LEVEL_FATAL, "edgernn_embed");  // errors reach us as exceptions
  Ort::SessionOptions opts;
  opts.SetIntraOpNumThreads(o.threads);
  opts.SetInterOpNumThreads(1);
  opts.SetExecutionMode(ExecutionMode::ORT_SEQUENTIAL);
  opts.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
  Ort::Session session(env, o.model.c_str(), opts);  // loaded once; a stream is only its state

  Ort::AllocatorWithDefaultOptions alloc;
  Ort::AllocatedStringPtr text = session.GetModelMetadata().LookupCustomMetadataMapAllocated(kMetaKey, alloc);
  if (!text)
    throw Error(o.model + ": no '" + kMetaKey + "' metadata; expected an .onnx file written by `edgernn export`");
  const Meta m = read_meta(text.get(), o.model);
  if (m.bidirectional)
    throw Error("this model is bidirectional: it reads the future, so it cannot be stepped; run it offline");
  check_graph(session, m, o.model);

  std::vector<std::string> in_names{m.x}, out_names{m.y};
  std::vector<Ort::Value> state;  // the stream: zeros at the start
  for (const auto& s : m.states) {
    in_names.push_back(s.input);
    out_names.push_back(s.output);
    state.push_back(Ort::Value::CreateTensor<float>(alloc, s.shape.data(), s.shape.size()));
    auto& v = state.back();
    std::fill_n(v.GetTensorMutableData<float>(), v.GetTensorTypeAndShapeInfo().GetElementCount(), 0.f);
  }
  std::vector<const char*> in_ptrs, out_ptrs;
  for (const auto& n : in_names) in_ptrs.push_back(n.c_str());
  for (const auto& n : out_names) out_ptrs.push_back(n.c_str());

  Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  const int64_t width = m.tokens ? 1 : m.features;
  std::vector<float> frame(static_cast<size_t>(width));
  int64_t token = 0;
  const int64_t x_shape[3] = {1, 1, width};
  Writer writer(o.format, m);
  std::string line;
  long t = 0;
  for (size_t lineno = 1; std::getline(std::cin, line); ++lineno) {
    size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    std::vector<double> values = parse_line(line, lineno, width);
    for (size_t i = 0; i < values.size(); ++i) {
      if (!std::isfinite(values[i]))
        throw Error("frame " + std::to_string(t) + " holds NaN or Inf; expected finite numbers (state unchanged)");
      frame[i] = static_cast<float>(values[i]);
    }
    std::vector<Ort::Value> inputs;
    if (m.tokens) {
      token = static_cast<int64_t>(values[0]);
      if (token < 0 || (m.vocab > 0 && token >= m.vocab))
        throw Error("<stdin>:" + std::to_string(lineno) + ": token " + std::to_string(token) + " is out of range; " +
                    "expected an id in 0.." + std::to_string(m.vocab - 1));
      inputs.push_back(Ort::Value::CreateTensor<int64_t>(cpu, &token, 1, x_shape, 2));
    } else {
      inputs.push_back(Ort::Value::CreateTensor<float>(cpu, frame.data(), frame.size(), x_shape, 3));
    }
    for (auto& s : state) inputs.push_back(std::move(s));
    std::vector<Ort::Value> outputs =
        session.Run(Ort::RunOptions{nullptr}, in_ptrs.data(), inputs.data(), inputs.size(), out_ptrs.data(),
                    out_ptrs.size());
    for (size_t i = 1; i < outputs.size(); ++i) {  // a NaN once in a recurrent state poisons every later step
      const float* v = outputs[i].GetTensorData<float>();
      size_t n = outputs[i].GetTensorTypeAndShapeInfo().GetElementCount();
      if (!std::all_of(v, v + n, [](float f) { return std::isfinite(f); }))
        throw Error("a state became non-finite at frame " + std::to_string(t) + "; the model diverged on this input");
    }
    state.clear();
    for (size_t i = 1; i < outputs.size(); ++i) state.push_back(std::move(outputs[i]));  // carried, no copy
    auto shape = outputs[0].GetTensorTypeAndShapeInfo().GetShape();  // [1, T=1, outputs]
    size_t n = static_cast<size_t>(shape.back());
    size_t total = outputs[0].GetTensorTypeAndShapeInfo().GetElementCount();
    writer.write(t++, outputs[0].GetTensorData<float>() + (total - n), n);  // the last step's y
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  try {
    return run(parse_args(argc, argv));
  } catch (const Error& e) {
    std::cerr << "Error: " << e.what() << "\n";
  } catch (const Ort::Exception& e) {
    std::cerr << "Error: onnxruntime: " << e.what() << "\n";
  }
  return 2;
}

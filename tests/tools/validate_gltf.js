// Validates .glb files with the Khronos glTF validator; prints one JSON report summary per file.
const fs = require("fs");
const validator = require("gltf-validator");
(async () => {
  for (const path of process.argv.slice(2)) {
    const report = await validator.validateBytes(new Uint8Array(fs.readFileSync(path)), {maxIssues: 50});
    const messages = report.issues.messages.map(m => ({code: m.code, severity: m.severity, message: m.message, pointer: m.pointer}));
    console.log(JSON.stringify({path, errors: report.issues.numErrors, warnings: report.issues.numWarnings, messages}));
  }
})();

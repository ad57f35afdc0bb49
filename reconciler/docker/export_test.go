package docker

// EngineAPI names the unexported method set for the external tests, so that
// the contract suite runs against both implementations without the package
// exporting an interface of its own.
type EngineAPI = engine

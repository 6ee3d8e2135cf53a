/*
 * Resolve the pipeline's configuration the way `nextflow run` does, without Nextflow.
 *
 * Run with the Groovy 4 that the Nextflow language server jar bundles (tests/nextflow_config.py):
 *   java -cp language-server-all.jar groovy.ui.GroovyMain tests/nextflow_config.groovy REQUEST.json
 *
 * Config files are compiled by Nextflow's own config front end (nf-lang, in the jar: the strict
 * config parser, ConfigResolveVisitor, ConfigToGroovyVisitor, GStringToStringVisitor), exactly as
 * nextflow/config/parser/v2/ConfigCompiler.java does; the compiled script then runs against a port
 * of nextflow/config/parser/v2/ConfigDsl.groovy (assign/block/withLabel/withName/includeConfig/
 * profiles applied in the order given/plugins). Process settings are then resolved per process as
 * nextflow/script/dsl/ProcessConfigBuilder.applyConfig does (withLabel, then withName from the
 * simple to the fully-qualified name, then process-wide defaults), and each directive is evaluated
 * as nextflow/processor/TaskConfig does (closures cloned with the task context as delegate,
 * DELEGATE_FIRST; cpus/memory/time capped by resourceLimits), the error strategy finally passed
 * through TaskProcessor.checkErrorStrategy's maxRetries rule.
 *
 * The same script also evaluates main.nf's plain helper functions (`def name(...) { ... }`, sent as
 * source text) with Nextflow's script built-ins that they use (file(), error(), log,
 * samplesheetToList()) stubbed, so their logic runs for real.
 *
 * Request (JSON): {"runs": [run, ...], "functions": {"sources": [...], "binding": {...},
 *   "calls": [{"fn", "args"}]}}, where a run is {"configs": [paths, in load order], "profiles":
 *   [...], "params": {CLI params}, "binding": {"projectDir", "launchDir"}, "processes": [{"name",
 *   "fqn", "labels", "directives"}], "tasks": [{"process", "task": {attempt, exitStatus, ...},
 *   "workflow": {containerEngine, ...}, "context": {meta, ...}, "directives": [names, or
 *   "decision" for what Nextflow does after this attempt failed]}]}.
 * Response (JSON): {"runs": [{"config", "declaredProfiles", "included", "processes", "tasks"} or
 *   {"error"}], "calls": [{"value", "log"} or {"abort", "log"}]}.
 */

import groovy.json.JsonOutput
import groovy.json.JsonSlurper
import java.nio.file.Files
import java.nio.file.Path
import java.nio.file.Paths
import java.security.CodeSource
import java.util.regex.Pattern
import nextflow.config.control.ConfigResolveVisitor
import nextflow.config.control.ConfigToGroovyVisitor
import nextflow.config.parser.ConfigParserPluginFactory
import nextflow.script.control.GStringToStringVisitor
import nextflow.script.control.PathCompareVisitor
import nextflow.util.Duration
import nextflow.util.MemoryUnit
import org.codehaus.groovy.ast.ClassHelper
import org.codehaus.groovy.control.CompilationUnit
import org.codehaus.groovy.control.CompilerConfiguration
import org.codehaus.groovy.control.Phases
import org.codehaus.groovy.control.SourceUnit

class Units {
    static void install() {
        ExpandoMetaClass.enableGlobally()
        def memory = [B: 1L, KB: 1L << 10, MB: 1L << 20, GB: 1L << 30, TB: 1L << 40, PB: 1L << 50]
        def time = [ms: 1L, s: 1000L, sec: 1000L, second: 1000L, seconds: 1000L, m: 60000L, min: 60000L,
                    minute: 60000L, minutes: 60000L, h: 3600000L, hour: 3600000L, hours: 3600000L,
                    d: 86400000L, day: 86400000L, days: 86400000L]
        [Integer, Long, BigInteger, BigDecimal, Double, Float].each { Class cls ->
            memory.each { String unit, long factor ->
                [unit, unit.toLowerCase()].unique().each { String name ->
                    cls.metaClass."get${name.capitalize()}" = { -> new MemoryUnit((long) (((Number) delegate) * factor)) }
                }
            }
            time.each { String unit, long factor ->
                cls.metaClass."get${unit.capitalize()}" = { -> new Duration((long) (((Number) delegate) * factor)) }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Compiling a config file: nextflow/config/parser/v2/ConfigCompiler.java
// ------------------------------------------------------------------------------------------------
class NfConfigLoader extends GroovyClassLoader {
    static final List DEFAULT_IMPORTS = ['nextflow.util.Duration', 'nextflow.util.MemoryUnit']
        .collect { name -> ClassHelper.makeWithoutCaching(name) }

    NfConfigLoader(ClassLoader parent, CompilerConfiguration config) { super(parent, config) }

    @Override
    protected CompilationUnit createCompilationUnit(CompilerConfiguration config, CodeSource source) {
        final unit = super.createCompilationUnit(config, source)
        unit.addPhaseOperation({ SourceUnit su -> analyze(su, unit) } as CompilationUnit.ISourceUnitOperation, Phases.CONVERSION)
        return unit
    }

    static void analyze(SourceUnit source, CompilationUnit unit) {
        final cn = source.getAST().getClasses().get(0)
        new ConfigResolveVisitor(source, unit, DEFAULT_IMPORTS).visit()
        if( source.getErrorCollector().hasErrors() )
            return
        new ConfigToGroovyVisitor(source).visit()
        new PathCompareVisitor(source).visitClass(cn)
        new GStringToStringVisitor(source).visitClass(cn)
    }

    static int counter = 0

    static ConfigScript compile(Path path, ClassLoader parent) {
        final config = new CompilerConfiguration()
        config.setScriptBaseClass(ConfigScript.name)
        config.setPluginFactory(new ConfigParserPluginFactory())
        final loader = new NfConfigLoader(parent, config)
        final clazz = loader.parseClass(new String(Files.readAllBytes(path), "UTF-8"), "_nf_config_${counter++}.groovy")
        return (ConfigScript) clazz.getDeclaredConstructor().newInstance()
    }
}

class ConfigError extends RuntimeException {
    ConfigError(String message) { super(message) }
}

// ------------------------------------------------------------------------------------------------
// Running it: a port of nextflow/config/parser/v2/ConfigDsl.groovy
// ------------------------------------------------------------------------------------------------
abstract class ConfigScript extends Script {
    Path configPath
    Map cliParams = [:]
    List<String> appliedProfiles = []
    Map target = [params: [:]]
    Set<String> declaredProfiles = new LinkedHashSet<>()
    List<String> includes = []

    @Override
    def getProperty(String name) {
        if( name == 'params' )
            return target.params
        return super.getProperty(name)   // strict, as `nextflow run`: an unknown name is an error
    }

    void assign(List<String> names, Object value) {
        if( names.size() == 2 && names.first() == 'params' && cliParams.containsKey(names.last()) )
            value = cliParams[names.last()]
        navigate(names.init()).put(names.last(), value)
    }

    Map navigate(List<String> names) {
        Map ctx = target
        for( final name : names ) {
            if( !ctx.containsKey(name) ) ctx[name] = [:]
            ctx = (Map) ctx[name]
        }
        return ctx
    }

    void block(String name, Closure closure) { block([name], closure) }

    void block(List<String> names, Closure closure) {
        final dsl = blockDsl(names)
        final cl = (Closure) closure.clone()
        cl.setResolveStrategy(Closure.DELEGATE_FIRST)
        cl.setDelegate(dsl)
        cl.call()
        dsl.apply()
    }

    BlockDsl blockDsl(List<String> names) {
        if( names == ['plugins'] )
            return new PluginsDsl(this)
        if( names == ['process'] || names == ['agent'] )
            return new SelectorDsl(this, names)
        if( names == ['profiles'] )
            return new ProfilesDsl(this, appliedProfiles)
        return new BlockDsl(this, names)
    }

    String env(String name) { System.getenv(name) }

    void includeConfig(String file) { includeConfig([], file) }

    void includeConfig(List<String> names, String file) {
        Path path = Paths.get(file)
        if( !path.isAbsolute() )
            path = configPath.resolveSibling(file)
        if( !Files.exists(path) )
            throw new ConfigError("Config file does not exist: ${path}")
        includes << path.toString()
        final child = ConfigLoader.parse(path, cliParams, (Map) target.params, appliedProfiles, binding.variables)
        declaredProfiles.addAll(child.declaredProfiles)
        includes.addAll(child.includes)
        final ctx = navigate(names)
        final merged = ConfigLoader.deepMerge(ctx, child.target)
        ctx.clear()
        ctx.putAll(merged)
    }
}

class BlockDsl {
    ConfigScript dsl
    List<String> scope
    BlockDsl(ConfigScript dsl, List<String> scope) { this.dsl = dsl; this.scope = scope }
    void assign(List<String> names, Object value) { dsl.assign(scope + names, value) }
    void block(String name, Closure closure) { dsl.block(scope + [name], closure) }
    void withLabel(String label, Closure closure) {
        throw new ConfigError("Config selectors are only allowed in the `process` and `agent` scopes (offending scope: `${scope.join('.')}`)")
    }
    void withName(String name, Closure closure) { withLabel(name, closure) }
    void includeConfig(String file) { dsl.includeConfig(scope, file) }
    void apply() {}
}

class PluginsDsl extends BlockDsl {
    Set<String> plugins = new LinkedHashSet<>()
    PluginsDsl(ConfigScript dsl) { super(dsl, []) }
    void id(String value) { plugins << value }
    void apply() { dsl.target.put('plugins', plugins) }
}

class SelectorDsl extends BlockDsl {
    SelectorDsl(ConfigScript dsl, List<String> scope) { super(dsl, scope) }
    void withLabel(String label, Closure closure) { dsl.block(scope + ["withLabel:${label}".toString()], closure) }
    void withName(String name, Closure closure) { dsl.block(scope + ["withName:${name}".toString()], closure) }
}

class ProfilesDsl extends BlockDsl {
    List<String> applied
    Map<String, Closure> blocks = [:]
    ProfilesDsl(ConfigScript dsl, List<String> applied) { super(dsl, []); this.applied = applied }
    void assign(List<String> names, Object value) { throw new ConfigError('Only profile blocks are allowed in the `profiles` scope') }
    void block(String name, Closure closure) { blocks[name] = closure; dsl.declaredProfiles << name }
    void includeConfig(String file) { throw new ConfigError('Only profile blocks are allowed in the `profiles` scope') }
    void apply() {
        for( final name : applied ) {   // in the order given on the command line
            if( blocks[name] )
                dsl.block(scope, blocks[name])
        }
    }
}

class ConfigLoader {
    static ConfigScript parse(Path path, Map cliParams, Map configParams, List<String> profiles, Map bindingVars) {
        final script = NfConfigLoader.compile(path, ConfigLoader.classLoader)
        script.setBinding(new Binding(new LinkedHashMap(bindingVars)))
        script.configPath = path
        script.cliParams = cliParams
        script.appliedProfiles = profiles
        ((Map) script.target.params).putAll(configParams)
        ((Map) script.target.params).putAll(cliParams)
        script.run()
        return script
    }

    // nextflow.extension.Bolts#deepMerge
    static Map deepMerge(Map target, Map source) {
        final result = new LinkedHashMap(target)
        for( final name : source.keySet() ) {
            if( result.containsKey(name) && result.get(name) instanceof Map && source.get(name) instanceof Map )
                result.put(name, deepMerge((Map) result.get(name), (Map) source.get(name)))
            else
                result.put(name, source.get(name))
        }
        return result
    }

    /** Every config file in load order (the project's nextflow.config, then each -c file), merged. */
    static Map load(List<String> files, List<String> profiles, Map cliParams, Map bindingVars, Set declared, List includes) {
        Map config = [params: new LinkedHashMap(cliParams)]
        for( final file : files ) {
            final script = parse(Paths.get(file).toAbsolutePath(), cliParams, (Map) config.params, profiles, bindingVars)
            declared.addAll(script.declaredProfiles)
            includes.add(file)
            includes.addAll(script.includes)
            config = deepMerge(config, script.target)
        }
        final unknown = profiles.findAll { p -> !(p in declared) }
        if( unknown )
            throw new ConfigError("Unknown configuration profile: '${unknown.first()}'")
        return config
    }
}

// ------------------------------------------------------------------------------------------------
// Processes and tasks: ProcessConfigBuilder#applyConfig, ConfigSelectorResolver, TaskConfig
// ------------------------------------------------------------------------------------------------
class Processes {
    static final Map DEFAULT_CONFIG = [debug: false, cacheable: true, shell: ['/bin/bash', '-ue'], maxRetries: 1,
                                       maxErrors: -1, errorStrategy: 'terminate']
    static final List REPEATABLE = ['label', 'module', 'pod', 'publishDir']

    static boolean matchesLabels(List<String> labels, String pattern) {
        final negated = pattern.startsWith('!')
        if( negated ) pattern = pattern.substring(1).trim()
        final regex = Pattern.compile(pattern)
        for( final label : labels )
            if( regex.matcher(label).matches() ) return !negated
        return negated
    }

    static boolean matchesName(String name, String pattern) {
        final negated = pattern.startsWith('!')
        if( negated ) pattern = pattern.substring(1).trim()
        return Pattern.compile(pattern).matcher(name).matches() ^ negated
    }

    static void applySettings(Map cfg, Map settings) {
        settings.each { key, value ->
            if( key.toString().startsWith('withLabel:') || key.toString().startsWith('withName:') || key == 'params' )
                return
            if( key == 'ext' ) {
                final ext = (Map) cfg.computeIfAbsent('ext', { k -> [:] })
                ((Map) value).each { k, v -> ext[k] = v }
                return
            }
            cfg[key] = value
        }
    }

    static Map resolve(Map processScope, String simpleName, String fqn, List<String> labels, Map directives) {
        final Map cfg = new LinkedHashMap(DEFAULT_CONFIG)
        cfg.putAll(directives ?: [:])
        cfg.ext = new LinkedHashMap((Map) (cfg.ext ?: [:]))
        final matchLabels = labels ?: ['']
        processScope.each { key, value ->
            final rule = key.toString()
            if( rule.startsWith('withLabel:') && matchesLabels(matchLabels, rule.substring(10).trim()) )
                applySettings(cfg, (Map) value)
        }
        for( final name : [simpleName, fqn].findAll().unique() ) {
            processScope.each { key, value ->
                final rule = key.toString()
                if( rule.startsWith('withName:') && matchesName(name, rule.substring(9).trim()) )
                    applySettings(cfg, (Map) value)
            }
        }
        processScope.each { key, value ->   // applyConfigDefaults
            final rule = key.toString()
            if( rule == 'params' || rule.startsWith('withLabel:') || rule.startsWith('withName:') )
                return
            if( rule == 'ext' ) {
                ((Map) value).each { k, v -> if( !((Map) cfg.ext).containsKey(k) ) ((Map) cfg.ext)[k] = v }
            }
            else if( !cfg.containsKey(rule) || (DEFAULT_CONFIG.containsKey(rule) && cfg[rule] == DEFAULT_CONFIG[rule]) ) {
                cfg[rule] = value
            }
        }
        return cfg
    }
}

/** `task` inside a directive closure: TaskConfig, whose unknown properties are null. */
class TaskView {
    Map cfg
    Map values
    Map context
    TaskView(Map cfg, Map values, Map context) { this.cfg = cfg; this.values = values; this.context = context }
    // plain methods: property access on a TaskView is the closure's `task.<name>`
    Map config() { cfg }
    Map taskValues() { values }
    Map taskContext() { context }
    def getProperty(String name) {
        if( values.containsKey(name) ) return values[name]
        if( name == 'ext' ) return new ExtView(this)
        return cfg.containsKey(name) ? Tasks.directive(this, name) : null
    }
}

class ExtView {
    TaskView task
    ExtView(TaskView task) { this.task = task }
    def getProperty(String name) { Tasks.evaluate(task, ((Map) task.config().ext)?.get(name)) }
}

class Tasks {
    static Object evaluate(TaskView task, Object value) {
        if( value instanceof Closure ) {
            final copy = (Closure) value.clone()
            copy.setDelegate(new Binding(new LinkedHashMap(task.taskContext()) + [task: task]))
            copy.setResolveStrategy(Closure.DELEGATE_FIRST)
            return copy.call()
        }
        if( value instanceof Map ) {
            return value.collectEntries { k, v -> [(k): evaluate(task, v)] }
        }
        return value
    }

    static Object directive(TaskView task, String name) {
        def value = evaluate(task, task.config()[name])
        if( name in ['cpus', 'memory', 'time'] && value != null ) {
            final limits = (Map) evaluate(task, task.config().resourceLimits)
            final limit = limits?.get(name)
            if( limit != null && value > limit ) value = limit
        }
        return value
    }

    /** TaskProcessor#checkErrorStrategy: what Nextflow does when this attempt failed. */
    static String decision(TaskView task) {
        final strategy = directive(task, 'errorStrategy')
        final action = strategy == null ? 'TERMINATE' : strategy.toString().toUpperCase()
        if( !(action in ['TERMINATE', 'FINISH', 'IGNORE', 'RETRY']) )
            throw new ConfigError("Not a valid `ErrorStrategy` value: ${strategy}")
        if( action == 'RETRY' ) {
            final maxRetries = (directive(task, 'maxRetries') ?: 0) as int
            final int taskErrCount = (task.taskValues().attempt ?: 1) as int
            return taskErrCount <= maxRetries ? 'retry' : 'terminate'
        }
        return action.toLowerCase()
    }
}

// ------------------------------------------------------------------------------------------------
// main.nf helper functions, with the Nextflow built-ins they call stubbed
// ------------------------------------------------------------------------------------------------
class NfPath {
    final Path path
    NfPath(Path path) { this.path = path.normalize() }
    NfPath(String path) { this(Paths.get(path)) }
    boolean exists() { Files.exists(path) }
    boolean isDirectory() { Files.isDirectory(path) }
    boolean isFile() { Files.isRegularFile(path) }
    boolean delete() { Files.deleteIfExists(path) }
    NfPath getParent() { new NfPath(path.toAbsolutePath().parent) }
    NfPath resolve(Object other) { new NfPath(path.resolve(other.toString())) }
    String getName() { path.fileName.toString() }
    String getText() { new String(Files.readAllBytes(path), "UTF-8") }
    String toUriString() { path.toUri().toString() }
    String toString() { path.toString() }
    boolean equals(Object o) { o instanceof NfPath && o.path == path }
    int hashCode() { path.hashCode() }
}

class NfAbort extends RuntimeException {
    NfAbort(String message) { super(message) }
}

abstract class FunctionScript extends Script {
    NfPath file(Map opts, Object value) {
        final result = value instanceof NfPath ? (NfPath) value : new NfPath(value.toString())
        if( opts?.checkIfExists && !result.exists() )
            throw new NfAbort("No such file or directory: ${result}")
        return result
    }
    NfPath file(Object value) { file([:], value) }
    void error(String message) { throw new NfAbort(message) }
    List samplesheetToList(Object sheet, Object schema) { (List) binding.getVariable('samplesheetRows') }
}

class Functions {
    static List run(Map request) {
        final config = new CompilerConfiguration()
        config.setScriptBaseClass(FunctionScript.name)
        final shell = new GroovyShell(Functions.classLoader, new Binding(), config)
        final script = (Script) shell.parse(((List) request.sources).join('\n\n'), 'MainNfFunctions.groovy')
        final logged = []
        final bindingVars = new LinkedHashMap((Map) (request.binding ?: [:]))
        bindingVars.log = [info: { msg -> logged << "info: ${msg}".toString() }, warn: { msg -> logged << "warn: ${msg}".toString() }]
        if( bindingVars.projectDir ) bindingVars.projectDir = new NfPath(bindingVars.projectDir.toString())
        script.setBinding(new Binding(bindingVars))
        return ((List) request.calls).collect { Map call ->
            logged.clear()
            try {
                final args = ((List) (call.args ?: [])).collect { a -> a instanceof Map && a.path ? new NfPath(a.path.toString()) : a }
                final value = script.invokeMethod(call.fn.toString(), args as Object[])
                return [value: Json.plain(value), log: new ArrayList(logged)]
            }
            catch( NfAbort e ) {
                return [abort: e.message, log: new ArrayList(logged)]
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// JSON
// ------------------------------------------------------------------------------------------------
class Json {
    static Object plain(Object value) {
        if( value == null || value instanceof Boolean || value instanceof Number || value instanceof String )
            return value
        if( value instanceof Closure ) return [closure: true]
        if( value instanceof MemoryUnit ) return [memory: value.toString(), bytes: value.bytes]
        if( value instanceof Duration ) return [duration: value.toString(), millis: value.millis]
        if( value instanceof NfPath || value instanceof Path ) return [path: value.toString()]
        if( value instanceof Map ) return value.collectEntries { k, v -> [(k.toString()): plain(v)] }
        if( value instanceof Collection || value instanceof Object[] ) return value.collect { v -> plain(v) }
        return value.toString()   // GString, enums
    }
}

// ------------------------------------------------------------------------------------------------
// main
// ------------------------------------------------------------------------------------------------
Units.install()

/** One configuration: its config files loaded, its processes resolved, its task questions answered. */
Map resolveRun(Map run) {
    final out = [:]
    try {
        final Set declared = new LinkedHashSet()
        final List includes = []
        final bindingVars = new LinkedHashMap((Map) (run.binding ?: [:]))
        final config = ConfigLoader.load((List) run.configs, (List) (run.profiles ?: []),
                                         (Map) (run.params ?: [:]), bindingVars, declared, includes)
        out.config = Json.plain(config)
        out.declaredProfiles = declared as List
        out.included = includes
        final processScope = (Map) (config.process ?: [:])
        final resolved = [:]
        ((List) (run.processes ?: [])).each { Map p ->
            resolved[p.name] = Processes.resolve(processScope, p.name.toString(), (p.fqn ?: p.name).toString(),
                                                 (List) (p.labels ?: []), (Map) (p.directives ?: [:]))
        }
        out.processes = Json.plain(resolved)
        out.tasks = ((List) (run.tasks ?: [])).collect { Map t ->
            final cfg = (Map) resolved[t.process]
            if( cfg == null ) throw new ConfigError("task of an unknown process ${t.process}")
            final Map values = [attempt: 1, process: t.process] + ((Map) (t.task ?: [:]))
            final context = [params: config.params, workflow: t.workflow ?: [:], projectDir: bindingVars.projectDir,
                             launchDir: bindingVars.launchDir] + ((Map) (t.context ?: [:]))
            final task = new TaskView(cfg, values, context)
            final answers = [:]
            ((List) (t.directives ?: [])).each { String name ->
                try {
                    answers[name] = Json.plain(name == 'decision' ? Tasks.decision(task) : Tasks.directive(task, name))
                }
                catch( Exception e ) {
                    answers[name] = [error: "${e.class.simpleName}: ${e.message}".toString()]
                }
            }
            return answers
        }
    }
    catch( Exception e ) {
        out.error = "${e.class.simpleName}: ${e.message}".toString()
    }
    return out
}

final request = (Map) new JsonSlurper().parse(new File(args[0]))
final response = [runs: ((List) (request.runs ?: [])).collect { Map run -> resolveRun(run) }]
try {
    if( request.functions )
        response.calls = Functions.run((Map) request.functions)
}
catch( Exception e ) {
    response.error = "${e.class.simpleName}: ${e.message}".toString()
}
println JsonOutput.toJson(response)

package nextflow.util

import java.nio.file.Path
import org.codehaus.groovy.runtime.typehandling.DefaultTypeTransformation

/*
 * A stand-in for Nextflow's nextflow.util.LangHelpers: the comparisons the config front end's
 * PathCompareVisitor rewrites `==`, `<`, ... into (paths by value, memory and durations by size,
 * everything else as Groovy compares).
 */
class LangHelpers {

    private static Integer special(Object left, Object right) {
        if( left instanceof MemoryUnit && right instanceof MemoryUnit )
            return ((MemoryUnit) left).compareTo((MemoryUnit) right)
        if( left instanceof Duration && right instanceof Duration )
            return ((Duration) left).compareTo((Duration) right)
        return null
    }

    static boolean compareEqual(Object left, Object right) {
        if( left.is(right) ) return true
        if( left instanceof Path && right instanceof Path ) return left == right
        final cmp = special(left, right)
        return cmp != null ? cmp == 0 : DefaultTypeTransformation.compareEqual(left, right)
    }

    private static int compare(Object left, Object right) {
        final cmp = special(left, right)
        return cmp != null ? cmp : DefaultTypeTransformation.compareTo(left, right)
    }

    static boolean compareLessThan(Object left, Object right) { compare(left, right) < 0 }
    static boolean compareLessThanEqual(Object left, Object right) { compare(left, right) <= 0 }
    static boolean compareGreaterThan(Object left, Object right) { compare(left, right) > 0 }
    static boolean compareGreaterThanEqual(Object left, Object right) { compare(left, right) >= 0 }
}

package dev.esmd.apicurio;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import java.util.List;
import javax.enterprise.context.ApplicationScoped;
import javax.enterprise.inject.Produces;

/**
 * The bean that Apicurio's config-index extension makes at build time: the list of
 * properties an administrator may change while the registry runs. That extension's
 * deployment jar is not served by the package mirror (see ../apicurio-pom.xml), so the list
 * is made here, empty: a test registry changes no property at run time.
 */
@ApplicationScoped
public class DynamicConfigProducer {
    @Produces
    @ApplicationScoped
    DynamicConfigPropertyList dynamicConfigPropertyList() {
        return new DynamicConfigPropertyList(List.of());
    }
}
